using System.Net;
using System.Text.Json.Nodes;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Backends.Lxd;

/// <summary>LXD going away and coming back, and falkd killed: instances are taken back or deleted, never leaked.</summary>
[Collection(LxdTests.Name)]
public sealed class LxdRecoveryTests(LxdHost lxd)
{
    [Fact(Timeout = 240_000)]
    public async Task With_LXD_stopped_lxd_templates_answer_503_naming_the_socket_others_work_and_Falk_recovers_when_it_returns()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var falk = await LxdDaemon.StartAsync(lxd, ct, templates: """
            [plain]
            type = custom
            launch = /bin/sleep 1000
            ssh_user = nobody
            """);
        var running = await falk.Client.BootAsync((await falk.Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>(), ct);
        var runningId = running["id"]!.GetValue<string>();

        await LxdHost.StopAsync(ct);
        try
        {
            using (var refused = await falk.Client.PostJsonAsync("v1/machines", new { template = "sshd" }, ct))
            {
                var problem = await refused.ShouldBeProblemAsync(HttpStatusCode.ServiceUnavailable, "backend-unavailable", ct);
                problem["detail"]!.GetValue<string>().Should().Contain(LxdCli.SocketPath);
                refused.Headers.RetryAfter.Should().NotBeNull();
            }

            var plain = (await falk.Client.CreateAsync("plain", ct))["id"]!.GetValue<string>();
            await falk.Client.BootAsync(plain, ct, "");
            await falk.Client.DeleteMachineAsync(plain, ct);
            (await falk.Client.StateAsync(runningId, ct)).Should().Be("running", "the container runs on without the LXD daemon");
            (await SshAsync(running, "id -un", ct)).Should().Be("chantal", "its proxy device keeps forwarding");
        }
        finally
        {
            await LxdHost.StartAsync(ct);
        }

        var again = await falk.Client.BootAsync((await falk.Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>(), ct);
        (await SshAsync(again, "id -un", ct)).Should().Be("chantal");

        // The watch of the machine that ran through the outage carries on.
        var waiting = falk.Client.PostAsync($"v1/machines/{runningId}/wait?condition=stopped&timeout=60", null, ct);
        await LxdCli.RunAsync(["stop", runningId], ct);
        using (var waited = await waiting)
        {
            (await waited.JsonAsync(ct))["state"]!.GetValue<string>().Should().Be("stopped");
        }

        await falk.Client.DeleteMachineAsync(runningId, ct);
        await falk.Client.DeleteMachineAsync(again["id"]!.GetValue<string>(), ct);
        (await falk.InstancesAsync(ct)).Should().BeEmpty();
    }

    [Fact(Timeout = 300_000)]
    public async Task After_kill_9_the_next_start_takes_running_instances_back_and_deletes_marked_instances_it_has_no_record_of_but_not_others()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var falk = await LxdDaemon.StartAsync(lxd, ct, onShutdown: "keep");
        var created = await falk.Client.CreateAsync("sshd", ct);
        var id = created["id"]!.GetValue<string>();
        var running = await falk.Client.BootAsync(id, ct);
        var prepared = (await falk.Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>();
        using (var snapshot = await falk.Client.PostJsonAsync($"v1/machines/{id}/snapshots", new { name = "before-kill" }, ct))
        {
            snapshot.StatusCode.Should().Be(HttpStatusCode.Created, await snapshot.Content.ReadAsStringAsync(ct));
        }

        await falk.Daemon.SignalDaemonOnlyAsync(kill: true, ct);

        // While falkd is down, instances appear: one with its marks but no record, one of another daemon.
        var suffix = Guid.NewGuid().ToString("N")[..8];
        var orphan = $"morphan{suffix}";
        var foreign = $"mforeign{suffix}";
        try
        {
            await LxdCli.RunAsync(["init", lxd.ImageAlias, orphan, "-c", $"user.falk.instance={falk.Instance}", "-c", $"user.falk.machine={orphan}"], ct);
            await LxdCli.RunAsync(["init", lxd.ImageAlias, foreign, "-c", "user.falk.instance=someotherdaemon", "-c", $"user.falk.machine={foreign}"], ct);

            await falk.Daemon.StartProcessAsync(ct);

            var machines = await falk.Client.ListAsync(ct);
            machines.Select(m => m!["id"]!.GetValue<string>()).Should().BeEquivalentTo([id, prepared]);
            var back = machines.Single(m => m!["id"]!.GetValue<string>() == id)!;
            back["state"]!.GetValue<string>().Should().Be("running");
            back["ssh"]!["port"]!.GetValue<int>().Should().Be(created["ssh"]!["port"]!.GetValue<int>());
            back["ssh"]!["known_host_key"]!.GetValue<string>().Should().Be(lxd.HostKey.PublicKeyLine);
            machines.Single(m => m!["id"]!.GetValue<string>() == prepared)!["state"]!.GetValue<string>().Should().Be("prepared");
            (await SshAsync(running, "id -un", ct)).Should().Be("chantal", "the instance kept serving SSH on its port");
            using (var list = await falk.Client.GetAsync($"v1/machines/{id}/snapshots", ct))
            {
                (await list.JsonAsync(ct)).AsArray().Select(s => s!["name"]!.GetValue<string>()).Should().Equal("before-kill");
            }

            (await falk.InstancesAsync(ct)).Keys.Should().BeEquivalentTo([id, prepared], "the unrecorded instance is deleted");
            (await LxdCli.QueryAsync("/1.0/instances", ct)).AsArray().Select(i => i!.GetValue<string>()).Should().Contain($"/1.0/instances/{foreign}",
                "another daemon's instance is not touched");
            falk.Daemon.Output.Should().Contain($"Machine {orphan}: instance {orphan} deleted, it belongs to no recorded machine");

            // The watch was set up again: a stop outside Falk is seen.
            var waiting = falk.Client.PostAsync($"v1/machines/{id}/wait?condition=stopped&timeout=60", null, ct);
            await LxdCli.RunAsync(["stop", id], ct);
            using (var waited = await waiting)
            {
                (await waited.JsonAsync(ct))["state"]!.GetValue<string>().Should().Be("stopped");
            }

            await falk.Client.DeleteMachineAsync(id, ct);
            await falk.Client.DeleteMachineAsync(prepared, ct);
            (await falk.InstancesAsync(ct)).Should().BeEmpty();
        }
        finally
        {
            foreach (var name in new[] { orphan, foreign })
            {
                try
                {
                    await LxdCli.RunAsync(["delete", "--force", name], CancellationToken.None);
                }
                catch (Falk.Core.Processes.ProcessFailedException)
                {
                    // Already gone.
                }
            }
        }
    }

    private Task<string> SshAsync(JsonNode machine, string command, CancellationToken ct) =>
        MachineSsh.RunAsync(machine, LxdHost.User, lxd.ClientKeyPath, command, ct);
}
