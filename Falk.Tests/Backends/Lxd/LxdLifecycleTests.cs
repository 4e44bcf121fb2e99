using System.Net;
using System.Text.Json.Nodes;
using Falk.Core.Waiting;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Backends.Lxd;

/// <summary>The LXD backend through the real daemon and the host's real LXD: the life of a machine.</summary>
[Collection(LxdTests.Name)]
public sealed class LxdLifecycleTests(LxdHost lxd)
{
    [Fact(Timeout = 180_000)]
    public async Task A_machine_is_an_instance_marked_as_Falks_and_chantal_logs_in_through_its_proxy_device_with_the_host_key_read_from_the_image()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var falk = await LxdDaemon.StartAsync(lxd, ct);

        var created = await falk.Client.CreateAsync("sshd", ct, new Dictionary<string, string> { ["kevin.job"] = "42" });
        var id = created["id"]!.GetValue<string>();
        var port = created["ssh"]!["port"]!.GetValue<int>();

        created["ssh"]!["host_key_source"]!.GetValue<string>().Should().Be("image", "the key is read out of the image before anything runs");
        created["ssh"]!["known_host_key"]!.GetValue<string>().Should().Be(lxd.HostKey.PublicKeyLine);
        (await falk.InstancesAsync(ct)).Should().Equal(new Dictionary<string, string> { [id] = "Stopped" });
        var instance = await LxdCli.QueryAsync($"/1.0/instances/{id}", ct);
        var config = instance["config"]!;
        config["user.falk.machine"]!.GetValue<string>().Should().Be(id);
        config["user.falk.template"]!.GetValue<string>().Should().Be("sshd");
        config["user.falk.owner"]!.GetValue<string>().Should().Be("0");
        config["user.falk.label.kevin.job"]!.GetValue<string>().Should().Be("42");
        instance["devices"]!["falk-ssh"]!["listen"]!.GetValue<string>().Should().Be($"tcp:127.0.0.1:{port}");
        instance["devices"]!.AsObject().Select(d => d.Value!["type"]!.GetValue<string>()).Should().NotContain("nic", "the machine has no network of its own");

        var booted = await falk.Client.BootAsync(id, ct);

        booted["state"]!.GetValue<string>().Should().Be("running");
        booted["ssh"]!["known_host_key_verified"]!.GetValue<bool>().Should().BeTrue();
        (await SshAsync(booted, "echo hello-from-$(id -un)", ct)).Should().Be("hello-from-chantal");
        (await falk.InstancesAsync(ct)).Should().Equal(new Dictionary<string, string> { [id] = "Running" });

        await falk.Client.DeleteMachineAsync(id, ct);

        (await falk.InstancesAsync(ct)).Should().BeEmpty("delete removes the instance");
        using var gone = await falk.Client.GetAsync($"v1/machines/{id}", ct);
        gone.StatusCode.Should().Be(HttpStatusCode.NotFound);
        await falk.Client.DeleteMachineAsync(id, ct);
    }

    [Fact(Timeout = 180_000)]
    public async Task The_console_shows_the_init_output_stop_is_graceful_and_a_stop_outside_Falk_is_seen()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var falk = await LxdDaemon.StartAsync(lxd, ct, templates: $"""
            [pinned]
            type = lxd
            base_image = {lxd.ImageAlias}
            ssh_user = chantal
            ssh_host = 127.0.0.1
            ssh_known_host_key = {lxd.HostKey.PublicKeyLine}
            """);
        var created = await falk.Client.CreateAsync("pinned", ct);
        created["ssh"]!["host_key_source"]!.GetValue<string>().Should().Be("config", "a key in the template wins over the image's");
        var id = created["id"]!.GetValue<string>();
        await falk.Client.BootAsync(id, ct);

        (await falk.Client.GetStringAsync($"v1/machines/{id}/console", ct)).Should().Contain("falk-init: sshd started");
        using var follow = await falk.Client.GetAsync($"v1/machines/{id}/console?follow=true", HttpCompletionOption.ResponseHeadersRead, ct);
        var reading = follow.Content.ReadAsStringAsync(ct);
        using (var stop = await falk.Client.PostJsonAsync($"v1/machines/{id}/stop", new { timeout_seconds = 10 }, ct))
        {
            (await stop.JsonAsync(ct))["state"]!.GetValue<string>().Should().Be("stopped");
        }

        var streamed = await reading.WaitAsync(TimeSpan.FromSeconds(15), ct);
        streamed.Should().Contain("falk-init: shutting down", "the stop asked the init to shut down, and the followed console showed it");
        streamed.Split("falk-init: sshd started").Should().HaveCount(2, "no line is sent twice");

        var again = await falk.Client.BootAsync(id, ct);
        again["ssh"]!["port"]!.GetValue<int>().Should().Be(created["ssh"]!["port"]!.GetValue<int>());
        (await SshAsync(again, "id -un", ct)).Should().Be("chantal");

        var waiting = falk.Client.PostAsync($"v1/machines/{id}/wait?condition=stopped&timeout=60", null, ct);
        await LxdCli.RunAsync(["stop", id], ct);
        using (var waited = await waiting)
        {
            waited.StatusCode.Should().Be(HttpStatusCode.OK);
            (await waited.JsonAsync(ct))["state"]!.GetValue<string>().Should().Be("stopped");
        }
    }

    [Fact(Timeout = 240_000)]
    public async Task The_console_collected_from_LXD_stays_within_console_max_bytes_and_keeps_the_newest_output()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var falk = await LxdDaemon.StartAsync(lxd, ct, daemonExtra: "console_max_bytes = 1048576");
        var id = (await falk.Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>();
        await falk.Client.BootAsync(id, ct);
        var log = Path.Combine(falk.Daemon.Directory.File("state"), "machines", id, "console.log");

        // LXD keeps at most its ring buffer between reads and hands each part out once; each read adds ~120 kB here.
        for (var round = 0; round < 12; round++)
        {
            await LxdCli.RunAsync(["exec", id, "--", "sh", "-c", $"head -c 120000 /dev/zero | tr '\\0' x >/dev/console; echo MARK-{round} >/dev/console"], ct);
            await Wait.UntilAsync(
                async token => (await falk.Client.GetStringAsync($"v1/machines/{id}/console", token)).Contains($"MARK-{round}", StringComparison.Ordinal)
                    ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>($"MARK-{round} not collected yet"),
                TimeSpan.FromMilliseconds(200), TimeSpan.FromSeconds(20), $"round {round} in the console", ct);
        }

        new FileInfo(log).Length.Should().BeLessThanOrEqualTo(512 * 1024);
        new FileInfo(Falk.Core.Backends.ConsoleLog.RotatedPath(log)).Length.Should().BeLessThanOrEqualTo(512 * 1024);
        var console = await falk.Client.GetStringAsync($"v1/machines/{id}/console", ct);
        console.Should().Contain("MARK-11", "the newest output is kept").And.NotContain("MARK-0", "the oldest made room");
    }

    [Fact(Timeout = 180_000)]
    public async Task A_restored_snapshot_no_longer_has_a_file_written_after_it_and_the_machine_keeps_running_on_its_port()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var falk = await LxdDaemon.StartAsync(lxd, ct);
        var machine = await falk.Client.BootAsync((await falk.Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>(), ct);
        var id = machine["id"]!.GetValue<string>();
        await SshAsync(machine, "echo before > ~/before", ct);

        using (var snapshot = await falk.Client.PostJsonAsync($"v1/machines/{id}/snapshots", new { name = "clean" }, ct))
        {
            snapshot.StatusCode.Should().Be(HttpStatusCode.Created, await snapshot.Content.ReadAsStringAsync(ct));
        }

        await SshAsync(machine, "echo after > ~/after", ct);
        using (var list = await falk.Client.GetAsync($"v1/machines/{id}/snapshots", ct))
        {
            var body = await list.JsonAsync(ct);
            list.StatusCode.Should().Be(HttpStatusCode.OK, body.ToJsonString());
            var snapshots = body.AsArray();
            snapshots.Select(s => s!["name"]!.GetValue<string>()).Should().Equal("clean");
            snapshots[0]!["created_at"]!.GetValue<DateTimeOffset>().Should().BeCloseTo(DateTimeOffset.UtcNow, TimeSpan.FromMinutes(2));
        }

        (await LxdCli.QueryAsync($"/1.0/instances/{id}/snapshots", ct)).AsArray().Should().ContainSingle("the snapshot is LXD's own");
        using (var restore = await falk.Client.PostAsync($"v1/machines/{id}/snapshots/clean/restore", null, ct))
        {
            var restored = await restore.JsonAsync(ct);
            restore.StatusCode.Should().Be(HttpStatusCode.OK, restored.ToJsonString());
            restored["state"]!.GetValue<string>().Should().Be("running");
            restored["ssh"]!["port"]!.GetValue<int>().Should().Be(machine["ssh"]!["port"]!.GetValue<int>());
        }

        var files = await Wait.UntilAsync(async wait =>
        {
            try
            {
                return ProbeOutcome.Done(await SshAsync(machine, "ls ~", wait));
            }
            catch (Exception e) when (e is Renci.SshNet.Common.SshException or System.Net.Sockets.SocketException)
            {
                return ProbeOutcome.NotYet<string>(e.Message);
            }
        }, TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(30), "ssh into the restored machine", ct);
        files.Split('\n').Should().Equal("before");
        (await falk.Client.StateAsync(id, ct)).Should().Be("running", "the restart inside the restore is not the machine's end");

        using (var missing = await falk.Client.PostAsync($"v1/machines/{id}/snapshots/nope/restore", null, ct))
        {
            await missing.ShouldBeProblemAsync(HttpStatusCode.NotFound, "snapshot-not-found", ct);
        }

        await falk.Client.DeleteMachineAsync(id, ct);
        (await falk.InstancesAsync(ct)).Should().BeEmpty("the instance goes, and its snapshots with it");
    }

    [Fact(Timeout = 300_000)]
    public async Task A_commit_reaches_the_next_machine_but_not_one_made_before_and_the_old_version_goes_when_unused()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var falk = await LxdDaemon.StartAsync(lxd, ct);
        var before = await falk.Client.BootAsync((await falk.Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>(), ct);

        var manageId = await CreateManagedAsync(falk, ct);
        using (var second = await falk.Client.PostJsonAsync("v1/machines", new { template = "sshd", manage = true }, ct))
        {
            await second.ShouldBeProblemAsync(HttpStatusCode.Conflict, "management-conflict", ct);
        }

        var manage = await falk.Client.BootAsync(manageId, ct);
        await SshAsync(manage, "echo v1 > ~/installed", ct);
        await CommitAsync(falk, manageId, ct);

        var alias = $"falk.{falk.Instance}.sshd";
        var v1 = (await LxdCli.QueryAsync($"/1.0/images/aliases/{alias}", ct))["target"]!.GetValue<string>();
        var after = await falk.Client.BootAsync((await falk.Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>(), ct);
        (await SshAsync(after, "cat ~/installed", ct)).Should().Be("v1");
        (await SshAsync(before, "ls ~/installed 2>/dev/null || echo absent", ct)).Should().Be("absent");
        after["ssh"]!["host_key_source"]!.GetValue<string>().Should().Be("image");
        await falk.Client.DeleteMachineAsync(manageId, ct);

        manageId = await CreateManagedAsync(falk, ct);
        manage = await falk.Client.BootAsync(manageId, ct);
        await SshAsync(manage, "echo v2 > ~/installed", ct);
        await CommitAsync(falk, manageId, ct);
        await falk.Client.DeleteMachineAsync(manageId, ct);

        var v2 = (await LxdCli.QueryAsync($"/1.0/images/aliases/{alias}", ct))["target"]!.GetValue<string>();
        v2.Should().NotBe(v1, "the alias moved to the new version");
        (await LxdCli.ImagesAsync(falk.Instance, ct)).Should().BeEquivalentTo([v1, v2], "v1 is still used by a machine");

        await falk.Client.DeleteMachineAsync(after["id"]!.GetValue<string>(), ct);
        (await LxdCli.ImagesAsync(falk.Instance, ct)).Should().Equal([v2], "only the current version is left once no machine uses v1");
        var newest = await falk.Client.BootAsync((await falk.Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>(), ct);
        (await SshAsync(newest, "cat ~/installed", ct)).Should().Be("v2");
    }

    [Fact(Timeout = 300_000)]
    public async Task Ten_machines_at_once_get_distinct_ports_all_reach_ssh_and_leave_no_instance()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var falk = await LxdDaemon.StartAsync(lxd, ct, ports: 12);

        var machines = await Task.WhenAll(Enumerable.Range(0, 10).Select(async _ =>
        {
            var created = await falk.Client.CreateAsync("sshd", ct);
            return await falk.Client.BootAsync(created["id"]!.GetValue<string>(), ct, "?wait=ssh&timeout=180");
        }));

        machines.Select(m => m["ssh"]!["port"]!.GetValue<int>()).Should().OnlyHaveUniqueItems();
        (await Task.WhenAll(machines.Select(m => SshAsync(m, "id -un", ct)))).Should().AllBe("chantal");
        (await falk.InstancesAsync(ct)).Values.Should().HaveCount(10).And.AllBe("Running");

        await Task.WhenAll(machines.Select(m => falk.Client.DeleteMachineAsync(m["id"]!.GetValue<string>(), ct)));

        (await falk.InstancesAsync(ct)).Should().BeEmpty();
    }

    [Fact(Timeout = 180_000)]
    public async Task The_command_key_is_logged_once_as_ignored_and_the_profiles_and_limits_replacing_it_reach_the_instance()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var falk = await LxdDaemon.StartAsync(lxd, ct, templates: $"""
            [tuned]
            type = lxd
            base_image = {lxd.ImageAlias}
            command = lxc launch {"{BASE_IMAGE}"} {"{CONTAINERNAME}"} -p default -c limits.memory=256MiB
            profiles = default
            memory = 256MiB
            cpus = 1
            config = environment.FALK_GREETING="hello world"
            ssh_user = chantal
            ssh_host = 127.0.0.1
            """);

        var booted = await falk.Client.BootAsync((await falk.Client.CreateAsync("tuned", ct))["id"]!.GetValue<string>(), ct);

        var id = booted["id"]!.GetValue<string>();
        var instance = await LxdCli.QueryAsync($"/1.0/instances/{id}", ct);
        instance["profiles"]!.AsArray().Select(p => p!.GetValue<string>()).Should().Equal("default");
        instance["config"]!["limits.memory"]!.GetValue<string>().Should().Be("256MiB");
        instance["config"]!["limits.cpu"]!.GetValue<string>().Should().Be("1");
        instance["config"]!["environment.FALK_GREETING"]!.GetValue<string>().Should().Be("hello world");
        falk.Daemon.Output.Split('\n').Where(l => l.Contains("command key is ignored", StringComparison.Ordinal)).Should().ContainSingle()
            .Which.Should().Contain("tuned");
    }

    private Task<string> SshAsync(JsonNode machine, string command, CancellationToken ct) =>
        MachineSsh.RunAsync(machine, LxdHost.User, lxd.ClientKeyPath, command, ct);

    [Fact(Timeout = 300_000)]
    public async Task A_delete_during_a_commit_wins_the_commit_answers_not_found_and_no_image_or_instance_is_left()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var falk = await LxdDaemon.StartAsync(lxd, ct);
        var manageId = await CreateManagedAsync(falk, ct);
        var commit = falk.Client.PostJsonAsync($"v1/machines/{manageId}/commit", new { timeout_seconds = 10 }, ct);
        await Wait.UntilAsync(
            async token => (await RunningOperationsAsync(token)).Count > 0
                ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>("no LXD operation running yet"),
            TimeSpan.FromMilliseconds(50), TimeSpan.FromSeconds(60), "LXD to publish the machine", ct);

        await falk.Client.DeleteMachineAsync(manageId, ct);

        using (var answer = await commit)
        {
            await answer.ShouldBeProblemAsync(HttpStatusCode.NotFound, "machine-not-found", ct);
        }

        (await RunningOperationsAsync(ct)).Should().BeEmpty("the delete waited for LXD's publish to end");
        (await falk.InstancesAsync(ct)).Should().BeEmpty();
        (await LxdCli.ImagesAsync(falk.Instance, ct)).Should().BeEmpty("the image the overtaken commit made is not left behind");
    }

    [Fact(Timeout = 300_000)]
    public async Task A_delete_during_a_snapshot_wins_the_snapshot_answers_not_found_and_no_instance_is_left()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var falk = await LxdDaemon.StartAsync(lxd, ct);
        var id = (await falk.Client.BootAsync((await falk.Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>(), ct))["id"]!.GetValue<string>();
        var snapshot = falk.Client.PostJsonAsync($"v1/machines/{id}/snapshots", new { name = "overtaken" }, ct);
        await Wait.UntilAsync(
            async token => (await RunningOperationsAsync(token)).Count > 0 ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>("no LXD operation running yet"),
            TimeSpan.FromMilliseconds(20), TimeSpan.FromSeconds(60), "LXD to snapshot the machine", ct);

        await falk.Client.DeleteMachineAsync(id, ct);

        using (var answer = await snapshot)
        {
            await answer.ShouldBeProblemAsync(HttpStatusCode.NotFound, "machine-not-found", ct);
        }

        (await falk.InstancesAsync(ct)).Should().BeEmpty("the instance goes, and the snapshot with it");
        (await RunningOperationsAsync(ct)).Should().BeEmpty();
    }

    private static async Task<IReadOnlyList<string>> RunningOperationsAsync(CancellationToken ct) =>
        (await LxdCli.QueryAsync("/1.0/operations?recursion=1", ct))["running"]?.AsArray()
            .Select(o => o!["description"]!.GetValue<string>()).ToList() ?? [];

    private static async Task<string> CreateManagedAsync(LxdDaemon falk, CancellationToken ct)
    {
        using var response = await falk.Client.PostJsonAsync("v1/machines", new { template = "sshd", manage = true }, ct);
        var body = await response.JsonAsync(ct);
        response.StatusCode.Should().Be(HttpStatusCode.Created, body.ToJsonString());
        return body["id"]!.GetValue<string>();
    }

    private static async Task CommitAsync(LxdDaemon falk, string id, CancellationToken ct)
    {
        using var commit = await falk.Client.PostJsonAsync($"v1/machines/{id}/commit", new { timeout_seconds = 10 }, ct);
        commit.StatusCode.Should().Be(HttpStatusCode.OK, await commit.Content.ReadAsStringAsync(ct));
    }
}
