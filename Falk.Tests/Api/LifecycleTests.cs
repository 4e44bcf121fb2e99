using System.Net;
using Falk.Core.Machines;
using Falk.Core.Unix;
using Falk.Tests.Fixtures;
using Renci.SshNet;
using Renci.SshNet.Common;

namespace Falk.Tests.Api;

/// <summary>The whole life of a machine over HTTP on the daemon's socket, against Debian's real sshd.</summary>
public sealed class LifecycleTests(SshdDaemonFixture fixture) : IClassFixture<SshdDaemonFixture>
{
    private HttpClient Client => fixture.Client;

    [Fact(Timeout = 120_000)]
    public async Task A_machine_goes_from_create_to_an_ssh_login_to_gone_leaving_nothing_behind()
    {
        var ct = TestContext.Current.CancellationToken;

        var created = await Client.CreateAsync("sshd", ct, new Dictionary<string, string> { ["kevin.job"] = "42" });
        var id = created["id"]!.GetValue<string>();
        created["state"]!.GetValue<string>().Should().Be("prepared");
        created["labels"]!["kevin.job"]!.GetValue<string>().Should().Be("42");
        var port = created["ssh"]!["port"]!.GetValue<int>();

        var booted = await Client.BootAsync(id, ct);
        booted["state"]!.GetValue<string>().Should().Be("running");

        using var sshResponse = await Client.GetAsync($"v1/machines/{id}/ssh", ct);
        var ssh = await sshResponse.JsonAsync(ct);
        ssh["user"]!.GetValue<string>().Should().Be(fixture.Ssh.User);
        ssh["host"]!.GetValue<string>().Should().Be("127.0.0.1");
        ssh["port"]!.GetValue<int>().Should().Be(port);
        ssh["known_host_key"]!.GetValue<string>().Should().Be(fixture.Ssh.HostKey.PublicKeyLine);
        ssh["known_host_key_verified"]!.GetValue<bool>().Should().BeTrue();
        ssh["known_hosts_line"]!.GetValue<string>().Should().Be($"[127.0.0.1]:{port} {fixture.Ssh.HostKey.PublicKeyLine}");

        // Log in as a CI job would: key auth, and only the host key the API gave.
        var marker = Random.Shared.Next(100_000, 999_999);
        var connection = new ConnectionInfo("127.0.0.1", port, fixture.Ssh.User, new PrivateKeyAuthenticationMethod(fixture.Ssh.User, new PrivateKeyFile(fixture.Ssh.ClientKeyPath)));
        using (var client = new SshClient(connection))
        {
            client.HostKeyReceived += (_, e) => e.CanTrust = Convert.ToBase64String(e.HostKey) == ssh["known_host_key"]!.GetValue<string>().Split(' ')[1];
            await client.ConnectAsync(ct);
            using var command = client.RunCommand("echo hello-from-$(id -un)");
            command.ExitStatus.Should().Be(0);
            command.Result.Trim().Should().Be($"hello-from-{fixture.Ssh.User}");

            // A job's command still running in the session: sshd runs it in a session of its own, with the environment
            // sshd makes (no marks), under per-connection sshd processes that also left the launch's session and rewrote
            // their environment for their process titles. Only the descendants of the listener find them.
            using var job = client.CreateCommand($"exec sleep {marker}");
            var jobRun = job.ExecuteAsync(ct);
            var sleeper = await Falk.Core.Waiting.Wait.UntilAsync(
                _ => Task.FromResult(ProcessTable.WithArgument($"sleep {marker}") is [var pid] ? Falk.Core.Waiting.ProbeOutcome.Done(pid) : Falk.Core.Waiting.ProbeOutcome.NotYet<int>("the job's sleep is not running yet")),
                TimeSpan.FromMilliseconds(20), TimeSpan.FromSeconds(10), "the job's command to run", ct);
            var listener = ProcessTable.WithArgument($"-p {port} ").Should().ContainSingle("the launch is one sshd listening").Subject;
            List<int> sessionProcesses = [listener, .. ProcessTree.Descendants(listener)];
            sessionProcesses.Should().Contain(sleeper).And.HaveCountGreaterThan(2, "the connection has sshd processes of its own");
            ProcessTree.Read(sleeper)!.Value.Session.Should().NotBe(ProcessTree.Read(listener)!.Value.Session, "sshd puts the job in a session of its own");

            await Client.DeleteMachineAsync(id, ct);

            // Checked while the client is still connected: nothing here ends because the client went away.
            sessionProcesses.Where(ProcessTree.IsAlive).Should().BeEmpty("delete ends the sshd, its connection processes and the job's command");
            try
            {
                await jobRun;
            }
            catch (Exception e) when (e is SshException or ObjectDisposedException)
            {
                // The connection went with the machine.
            }
        }

        using var gone = await Client.GetAsync($"v1/machines/{id}", ct);
        await gone.ShouldBeProblemAsync(HttpStatusCode.NotFound, "machine-not-found", ct);
        (await Client.ListAsync(ct)).Should().NotContain(m => m!["id"]!.GetValue<string>() == id);
        PortAllocator.IsFreeOnHost(port).Should().BeTrue();
    }

    [Fact(Timeout = 60_000)]
    public async Task Deleting_twice_and_deleting_an_unknown_machine_both_answer_204()
    {
        var ct = TestContext.Current.CancellationToken;
        var id = (await Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>();

        await Client.DeleteMachineAsync(id, ct);
        await Client.DeleteMachineAsync(id, ct);
        await Client.DeleteMachineAsync("mnosuchmachine", ct);
    }

    [Fact(Timeout = 60_000)]
    public async Task A_template_with_a_wrong_pinned_key_never_becomes_ready()
    {
        var ct = TestContext.Current.CancellationToken;
        var id = (await Client.CreateAsync("sshd-wrong-key", ct))["id"]!.GetValue<string>();
        var port = (await Client.GetAsync($"v1/machines/{id}/ssh", ct).ContinueWith(t => t.Result.JsonAsync(ct), ct).Unwrap())["port"]!.GetValue<int>();

        using var response = await Client.PostAsync($"v1/machines/{id}/boot?wait=ssh&timeout=30", null, ct);

        var problem = await response.ShouldBeProblemAsync(HttpStatusCode.BadGateway, "host-key-mismatch", ct);
        problem["presented_fingerprint"]!.GetValue<string>().Should().Be(fixture.Ssh.HostKey.FingerprintSha256);
        problem["expected_fingerprints"]!.AsArray().Should().ContainSingle().Which!.GetValue<string>().Should().StartWith("SHA256:").And.NotBe(fixture.Ssh.HostKey.FingerprintSha256);
        problem["detail"]!.GetValue<string>().Should().Contain(fixture.Ssh.HostKey.FingerprintSha256);

        using var machine = await Client.GetAsync($"v1/machines/{id}", ct);
        var state = await machine.JsonAsync(ct);
        state["state"]!.GetValue<string>().Should().Be("failed");
        state["last_error"]!.GetValue<string>().Should().Contain("presented host key");
        ProcessTable.WithArgument($"-p {port} ").Should().BeEmpty("a machine with the wrong key is not left running");

        await Client.DeleteMachineAsync(id, ct);
    }

    [Fact(Timeout = 60_000)]
    public async Task Without_a_pinned_key_the_key_seen_is_returned_marked_unverified()
    {
        var ct = TestContext.Current.CancellationToken;
        var id = (await Client.CreateAsync("sshd-unpinned", ct))["id"]!.GetValue<string>();
        (await Client.GetAsync($"v1/machines/{id}/ssh", ct).ContinueWith(t => t.Result.JsonAsync(ct), ct).Unwrap())["known_host_key"].Should().BeNull();

        var booted = await Client.BootAsync(id, ct);

        booted["ssh"]!["known_host_key"]!.GetValue<string>().Should().Be(fixture.Ssh.HostKey.PublicKeyLine);
        booted["ssh"]!["known_host_key_verified"]!.GetValue<bool>().Should().BeFalse();
        booted["ssh"]!["host_key_source"]!.GetValue<string>().Should().Be("observed");
        await Client.DeleteMachineAsync(id, ct);
    }

    [Fact(Timeout = 60_000)]
    public async Task Two_concurrent_boots_of_one_machine_launch_it_once_and_the_loser_gets_409_while_it_boots_or_200_once_it_runs()
    {
        var ct = TestContext.Current.CancellationToken;
        var created = await Client.CreateAsync("sshd", ct);
        var id = created["id"]!.GetValue<string>();

        // sshd rewrites its environment: its port tells which is this machine's.
        var sshdOfMachine = $"-p {created["ssh"]!["port"]} -f {fixture.Ssh.ConfigPath}";

        var boots = await Task.WhenAll(
            Client.PostAsync($"v1/machines/{id}/boot?wait=ssh&timeout=30", null, ct),
            Client.PostAsync($"v1/machines/{id}/boot?wait=ssh&timeout=30", null, ct));

        boots.Select(r => r.StatusCode).Should().Contain(HttpStatusCode.OK);
        if (boots.SingleOrDefault(r => r.StatusCode == HttpStatusCode.Conflict) is { } loser)
        {
            (await loser.ShouldBeProblemAsync(HttpStatusCode.Conflict, "wrong-state", ct))["state"]!.GetValue<string>().Should().Be("booting");
        }
        else
        {
            boots.Select(r => r.StatusCode).Should().Equal(HttpStatusCode.OK, HttpStatusCode.OK);
        }

        ProcessTable.WithArgument(sshdOfMachine).Should().ContainSingle("the machine is launched once");

        // Once it runs and SSH was verified, another boot answers at once, launching nothing.
        (await Client.BootAsync(id, ct))["state"]!.GetValue<string>().Should().Be("running");
        ProcessTable.WithArgument(sshdOfMachine).Should().ContainSingle();
        await Client.DeleteMachineAsync(id, ct);
    }

    [Fact(Timeout = 60_000)]
    public async Task A_stopped_machine_is_stopped_and_its_process_is_gone()
    {
        var ct = TestContext.Current.CancellationToken;
        var created = await Client.CreateAsync("sshd", ct);
        var id = created["id"]!.GetValue<string>();
        var port = created["ssh"]!["port"]!.GetValue<int>();
        await Client.BootAsync(id, ct);

        using var stop = await Client.PostJsonAsync($"v1/machines/{id}/stop", new { timeout_seconds = 5 }, ct);
        var stopped = await stop.JsonAsync(ct);

        stop.StatusCode.Should().Be(HttpStatusCode.OK, stopped.ToJsonString());
        stopped["state"]!.GetValue<string>().Should().Be("stopped");
        ProcessTable.WithArgument($"-p {port} ").Should().BeEmpty();

        using var wait = await Client.PostAsync($"v1/machines/{id}/wait?condition=stopped&timeout=5", null, ct);
        (await wait.JsonAsync(ct))["state"]!.GetValue<string>().Should().Be("stopped");

        // A stopped machine can boot again.
        (await Client.BootAsync(id, ct))["state"]!.GetValue<string>().Should().Be("running");
        await Client.DeleteMachineAsync(id, ct);
        ProcessTable.WithArgument($"-p {port} ").Should().BeEmpty();
    }
}
