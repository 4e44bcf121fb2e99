using System.Net;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Backends.Podman;

/// <summary>The podman backend through the real daemon and a real podman API service: the life of a machine.</summary>
public sealed class PodmanLifecycleTests(PodmanFixture fixture) : IClassFixture<PodmanFixture>
{
    [Fact(Timeout = 120_000)]
    public async Task A_machine_boots_from_base_image_and_chantal_logs_in_with_the_host_key_made_for_it()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var podman = await fixture.StartDaemonAsync(ct);

        var created = await podman.Client.CreateAsync("sshd", ct, new Dictionary<string, string> { ["kevin.job"] = "42" });
        var id = created["id"]!.GetValue<string>();
        var port = created["ssh"]!["port"]!.GetValue<int>();
        var booted = await podman.Client.BootAsync(id, ct);

        booted["state"]!.GetValue<string>().Should().Be("running");
        booted["ssh"]!["host_key_source"]!.GetValue<string>().Should().Be("machine");
        booted["ssh"]!["known_host_key"]!.GetValue<string>().Should().Be(created["ssh"]!["known_host_key"]!.GetValue<string>());
        booted["ssh"]!["known_host_key_verified"]!.GetValue<bool>().Should().BeTrue();
        (await PodmanSsh.RunAsync(booted, fixture.Image, "echo hello-from-$(id -un)", ct)).Should().Be("hello-from-chantal");

        var labels = await PodmanCli.RunAsync(["inspect", "--format",
            "{{index .Config.Labels \"org.falk.machine\"}} {{index .Config.Labels \"org.falk.template\"}} {{index .Config.Labels \"org.falk.owner\"}} {{index .Config.Labels \"org.falk.label.kevin.job\"}} {{.Name}}", id], ct);
        labels.Should().Equal($"{id} sshd 0 42 {id}");
        var published = await PodmanCli.RunAsync(["port", id, "22/tcp"], ct);
        published.Should().Equal($"127.0.0.1:{port}");

        await podman.Client.DeleteMachineAsync(id, ct);

        (await PodmanCli.ContainersAsync(podman.InstanceLabel, ct)).Should().BeEmpty("delete removes the container");
        using var gone = await podman.Client.GetAsync($"v1/machines/{id}", ct);
        gone.StatusCode.Should().Be(HttpStatusCode.NotFound);
        await podman.Client.DeleteMachineAsync(id, ct);
    }

    [Fact(Timeout = 120_000)]
    public async Task The_host_key_is_read_from_the_image_before_boot_and_a_key_in_the_template_wins_over_it()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var podman = await fixture.StartDaemonAsync(ct, templates: $"""
            [pinned]
            type = podman
            base_image = {fixture.Image.Reference}
            ssh_user = chantal
            ssh_host = 127.0.0.1
            ssh_known_host_key = {fixture.Image.HostKey.PublicKeyLine}

            [from-image]
            type = podman
            base_image = {fixture.Image.Reference}
            ssh_user = chantal
            ssh_host = 127.0.0.1
            host_key = image
            """);

        var fromImage = await podman.Client.CreateAsync("from-image", ct);
        var fromConfig = await podman.Client.CreateAsync("pinned", ct);

        fromImage["state"]!.GetValue<string>().Should().Be("prepared", "the key is read out of the image without starting anything");
        fromImage["ssh"]!["host_key_source"]!.GetValue<string>().Should().Be("image");
        fromImage["ssh"]!["known_host_key"]!.GetValue<string>().Should().Be(fixture.Image.HostKey.PublicKeyLine);
        fromImage["ssh"]!["known_host_key_verified"]!.GetValue<bool>().Should().BeTrue();
        fromConfig["ssh"]!["host_key_source"]!.GetValue<string>().Should().Be("config");
        (await PodmanCli.RunAsync(["ps", "-q", "--filter", "label=" + podman.InstanceLabel], ct)).Should().BeEmpty("nothing runs before boot");
        (await PodmanCli.ContainersAsync(podman.InstanceLabel, ct)).Should().HaveCount(2, "only the machines' own containers were made");
    }

    [Fact(Timeout = 120_000)]
    public async Task The_console_shows_the_container_output_and_follow_streams_it_until_the_machine_stops()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var podman = await fixture.StartDaemonAsync(ct);
        var id = (await podman.Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>();
        await podman.Client.BootAsync(id, ct);

        var whole = await podman.Client.GetStringAsync($"v1/machines/{id}/console", ct);
        whole.Should().Contain("Server listening on 0.0.0.0 port 22.");

        using var follow = await podman.Client.GetAsync($"v1/machines/{id}/console?follow=true", HttpCompletionOption.ResponseHeadersRead, ct);
        follow.StatusCode.Should().Be(HttpStatusCode.OK);
        var reading = follow.Content.ReadAsStringAsync(ct);
        using (var stop = await podman.Client.PostJsonAsync($"v1/machines/{id}/stop", new { timeout_seconds = 10 }, ct))
        {
            stop.StatusCode.Should().Be(HttpStatusCode.OK);
        }

        var streamed = await reading.WaitAsync(TimeSpan.FromSeconds(15), ct);
        streamed.Should().Contain("Server listening on 0.0.0.0 port 22.")
            .And.Contain("Received signal 15; terminating.", "lines logged while following are streamed, and the stream ends with the machine");
        streamed.Split("Server listening on 0.0.0.0 port 22.").Should().HaveCount(2, "no line is sent twice");
    }

    [Fact(Timeout = 120_000)]
    public async Task Stop_is_graceful_a_stopped_machine_boots_again_and_wait_for_stopped_sees_an_exit_outside_Falk()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var podman = await fixture.StartDaemonAsync(ct);
        var created = await podman.Client.CreateAsync("sshd", ct);
        var id = created["id"]!.GetValue<string>();
        await podman.Client.BootAsync(id, ct);

        using (var stop = await podman.Client.PostJsonAsync($"v1/machines/{id}/stop", new { timeout_seconds = 10 }, ct))
        {
            (await stop.JsonAsync(ct))["state"]!.GetValue<string>().Should().Be("stopped");
        }

        (await PodmanCli.RunAsync(["inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", id], ct)).Should().Equal("exited 0");

        var again = await podman.Client.BootAsync(id, ct);
        again["ssh"]!["port"]!.GetValue<int>().Should().Be(created["ssh"]!["port"]!.GetValue<int>());
        (await PodmanSsh.RunAsync(again, fixture.Image, "id -un", ct)).Should().Be("chantal");

        // Someone stops the container behind Falk's back: the engine's wait tells Falk.
        var waiting = podman.Client.PostAsync($"v1/machines/{id}/wait?condition=stopped&timeout=60", null, ct);
        await PodmanCli.RunAsync(["stop", "-t", "5", id], ct);
        using (var waited = await waiting)
        {
            waited.StatusCode.Should().Be(HttpStatusCode.OK);
            (await waited.JsonAsync(ct))["state"]!.GetValue<string>().Should().Be("stopped");
        }
    }

    [Fact(Timeout = 120_000)]
    public async Task A_container_removed_outside_Falk_is_not_taken_for_running_and_delete_still_answers_204()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var podman = await fixture.StartDaemonAsync(ct);
        var id = (await podman.Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>();
        await podman.Client.BootAsync(id, ct);

        await PodmanCli.RunAsync(["rm", "-f", id], ct);

        using (var waited = await podman.Client.PostAsync($"v1/machines/{id}/wait?condition=stopped&timeout=30", null, ct))
        {
            var machine = await waited.JsonAsync(ct);
            waited.StatusCode.Should().Be(HttpStatusCode.OK, machine.ToJsonString());
            machine["state"]!.GetValue<string>().Should().BeOneOf(["stopped", "failed"],
                "podman's rm -f stops the container, then removes it: Falk sees the exit (stopped, or failed for a non-zero code) or the container gone (failed)");
        }

        await podman.Client.DeleteMachineAsync(id, ct);

        // A machine whose container went before it ever ran says so when booted, instead of hanging.
        var prepared = (await podman.Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>();
        await PodmanCli.RunAsync(["rm", "-f", prepared], ct);
        using (var boot = await podman.Client.PostAsync($"v1/machines/{prepared}/boot", null, ct))
        {
            (await boot.ShouldBeProblemAsync(HttpStatusCode.BadGateway, "backend-failed", ct))["detail"]!.GetValue<string>().Should().Contain("removed outside Falk");
        }

        await podman.Client.DeleteMachineAsync(prepared, ct);
        (await podman.Client.ListAsync(ct)).Should().BeEmpty();
    }

    [Fact(Timeout = 180_000)]
    public async Task Ten_machines_at_once_get_distinct_ports_all_reach_ssh_and_leave_no_container()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var podman = await fixture.StartDaemonAsync(ct, ports: 12);

        var machines = await Task.WhenAll(Enumerable.Range(0, 10).Select(async _ =>
        {
            var created = await podman.Client.CreateAsync("sshd", ct);
            return await podman.Client.BootAsync(created["id"]!.GetValue<string>(), ct, "?wait=ssh&timeout=120");
        }));

        machines.Select(m => m["ssh"]!["port"]!.GetValue<int>()).Should().OnlyHaveUniqueItems();
        var users = await Task.WhenAll(machines.Select(m => PodmanSsh.RunAsync(m, fixture.Image, "id -un", ct)));
        users.Should().AllBe("chantal");
        (await PodmanCli.RunAsync(["ps", "-q", "--filter", "label=" + podman.InstanceLabel], ct)).Should().HaveCount(10);

        await Task.WhenAll(machines.Select(m => podman.Client.DeleteMachineAsync(m["id"]!.GetValue<string>(), ct)));

        (await PodmanCli.ContainersAsync(podman.InstanceLabel, ct)).Should().BeEmpty();
    }

    [Fact(Timeout = 120_000)]
    public async Task The_command_key_is_logged_once_as_ignored_and_the_keys_replacing_it_reach_the_container_environment_one_per_line_and_devices()
    {
        var ct = TestContext.Current.CancellationToken;
        using var shared = new TempDirectory();
        await File.WriteAllTextAsync(shared.File("greeting"), "hello from the host", ct);
        File.SetUnixFileMode(shared.Path, (UnixFileMode)Convert.ToInt32("755", 8));
        File.SetUnixFileMode(shared.File("greeting"), (UnixFileMode)Convert.ToInt32("644", 8));
        await using var podman = await fixture.StartDaemonAsync(ct, templates: $"""
            [tuned]
            type = podman
            base_image = {fixture.Image.Reference}
            command = podman run --rm -p {"{SSHPORT}"}:22 -m 256m {"{BASE_IMAGE}"}
            memory = 256m
            cpus = 1
            environment = FALK_GREETING="hello world"
                CI=1
                # a comment line inside the value is skipped
                FALK_LAST=line-three
            devices = /dev/zero:/dev/falk-zero, /dev/null
            volumes = {shared.Path}:/srv/shared:ro
            publish = 8080
            ssh_user = chantal
            ssh_host = 127.0.0.1
            """);

        var booted = await podman.Client.BootAsync((await podman.Client.CreateAsync("tuned", ct))["id"]!.GetValue<string>(), ct);

        var id = booted["id"]!.GetValue<string>();
        (await PodmanSsh.RunAsync(booted, fixture.Image, "cat /srv/shared/greeting", ct)).Should().Be("hello from the host");
        var environment = await PodmanCli.RunAsync(["inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", id], ct);
        environment.Should().Contain(["FALK_GREETING=hello world", "CI=1", "FALK_LAST=line-three"]);

        // The devices are there inside the machine, under the names asked for: the host's /dev/zero as /dev/falk-zero.
        (await PodmanSsh.RunAsync(booted, fixture.Image, "stat -c '%F %t:%T' /dev/falk-zero /dev/null && head -c 3 /dev/falk-zero | od -An -tx1", ct))
            .Should().Be("character special file 1:5\ncharacter special file 1:3\n 00 00 00");
        var devices = await PodmanCli.RunAsync(["inspect", "--format", "{{range .HostConfig.Devices}}{{.PathOnHost}}>{{.PathInContainer}}{{println}}{{end}}", id], ct);
        devices.Should().Contain(["/dev/zero>/dev/falk-zero", "/dev/null>/dev/null"]);
        var limits = await PodmanCli.RunAsync(["inspect", "--format", "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}", id], ct);
        limits.Should().Equal($"{256 * 1024 * 1024} 1000000000");
        (await PodmanCli.RunAsync(["port", id, "8080/tcp"], ct)).Should().ContainSingle().Which.Should().StartWith("127.0.0.1:");
        podman.Daemon.Output.Split('\n').Where(l => l.Contains("command key is ignored", StringComparison.Ordinal)).Should().ContainSingle()
            .Which.Should().Contain("tuned");
    }
}
