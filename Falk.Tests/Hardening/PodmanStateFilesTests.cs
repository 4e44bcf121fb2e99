using Falk.Tests.Fixtures;

namespace Falk.Tests.Hardening;

/// <summary>Issue 13 item 7 for podman: what a daemon with a running container keeps in its state folder is the daemon user's alone.</summary>
public sealed class PodmanStateFilesTests(PodmanFixture fixture) : IClassFixture<PodmanFixture>
{
    [Fact(Timeout = 180_000)]
    public async Task A_running_containers_state_files_are_the_daemon_users_alone()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var podman = await fixture.StartDaemonAsync(ct);
        var id = (await podman.Client.CreateAsync("sshd", ct, new { tenant = "secret-label" }))["id"]!.GetValue<string>();
        await podman.Client.BootAsync(id, ct);

        var state = podman.Daemon.Directory.File("state");
        StateFiles.ShouldBePrivate(state, expectAtLeast: ["falk.db", Path.Combine("machines", id)]);
        await StateFiles.ShouldBeUnreadableByNobodyAsync(Path.Combine(state, "falk.db"), ct);

        await podman.Client.DeleteMachineAsync(id, ct);
    }
}
