using Falk.Tests.Fixtures;

namespace Falk.Tests.Cli;

/// <summary>The administrator's workflow with the falk command, on real podman machines.</summary>
public sealed class FalkManageTests(PodmanFixture fixture) : IClassFixture<PodmanFixture>
{
    [Fact(Timeout = 600_000)]
    public async Task A_committed_session_reaches_the_next_run_and_a_discarded_one_changes_nothing()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var podman = await fixture.StartDaemonAsync(ct);
        var socket = podman.Daemon.SocketPath;
        var key = fixture.Image.ClientKeyPath;

        var (committed, _, commitLog) = await FalkCommand.RunAsync(socket, ct,
            "manage", "--commit", "--wait-stopped", "0", "-i", key, "sshd", "--", "sh", "-c", "echo 42 > /home/chantal/marker");
        commitLog.Should().Contain("committing").And.Contain("is now version");
        committed.Should().Be(0, commitLog);

        var (ran, marker, runLog) = await FalkCommand.RunAsync(socket, ct, "run", "-i", key, "sshd", "--", "cat", "/home/chantal/marker");
        ran.Should().Be(0, runLog);
        marker.Trim().Should().Be("42");

        var (discarded, _, discardLog) = await FalkCommand.RunAsync(socket, ct,
            "manage", "--discard", "--wait-stopped", "0", "-i", key, "sshd", "--", "sh", "-c", "echo 43 > /home/chantal/marker");
        discarded.Should().Be(0, discardLog);
        discardLog.Should().Contain("changes discarded");

        var (_, after, _) = await FalkCommand.RunAsync(socket, ct, "run", "-i", key, "sshd", "--", "cat", "/home/chantal/marker");
        after.Trim().Should().Be("42", "a discarded session changes nothing");
        (await podman.Client.ListAsync(ct)).Should().BeEmpty("every session deletes its machine");

        // The event stream told the commit once, naming the version the command printed; the discarded session none.
        var version = System.Text.RegularExpressions.Regex.Match(commitLog, @"is now version (\S+)").Groups[1].Value;
        var committedEvents = (await podman.Client.ReadEventsAsync(0, 1_000, ct)).Where(e => e.Type == "committed").ToList();
        committedEvents.Should().ContainSingle().Which.Data["detail"]!.GetValue<string>().Should().Be(version).And.NotBeEmpty();
        committedEvents[0].Data["template"]!.GetValue<string>().Should().Be("sshd");
        (await PodmanCli.ContainersAsync(podman.InstanceLabel, ct)).Should().BeEmpty();
    }
}
