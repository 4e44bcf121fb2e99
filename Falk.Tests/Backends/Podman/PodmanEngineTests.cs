using System.Net;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Backends.Podman;

/// <summary>What Falk does when podman's API service is not there, and when it comes back.</summary>
public sealed class PodmanEngineTests
{
    [Fact(Timeout = 180_000)]
    public async Task With_the_engine_stopped_podman_templates_answer_503_naming_the_socket_others_work_and_Falk_recovers_when_it_returns()
    {
        var ct = TestContext.Current.CancellationToken;
        var image = await PodmanTestImage.GetAsync(ct);
        using var directory = new TempDirectory();
        await using var service = await PodmanService.StartAsync(directory.File("podman.sock"), ct);
        await using var podman = await PodmanDaemon.StartAsync(service, image, """
            [plain]
            type = custom
            launch = /bin/sleep 1000
            ssh_user = nobody
            """, 10, "destroy", ct);
        var running = await podman.Client.BootAsync((await podman.Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>(), ct);

        await service.StopAsync();

        using (var refused = await podman.Client.PostJsonAsync("v1/machines", new { template = "sshd" }, ct))
        {
            var problem = await refused.ShouldBeProblemAsync(HttpStatusCode.ServiceUnavailable, "backend-unavailable", ct);
            problem["detail"]!.GetValue<string>().Should().Contain(service.SocketPath);
            refused.Headers.RetryAfter.Should().NotBeNull();
        }

        var plain = (await podman.Client.CreateAsync("plain", ct))["id"]!.GetValue<string>();
        await podman.Client.BootAsync(plain, ct, "");
        await podman.Client.DeleteMachineAsync(plain, ct);
        using (var machine = await podman.Client.GetAsync($"v1/machines/{running["id"]}", ct))
        {
            (await machine.JsonAsync(ct))["state"]!.GetValue<string>().Should().Be("running", "the container runs on without the API service");
        }

        await service.RestartAsync(ct);

        var again = await podman.Client.BootAsync((await podman.Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>(), ct);
        (await PodmanSsh.RunAsync(again, image, "id -un", ct)).Should().Be("chantal");
        (await PodmanSsh.RunAsync(running, image, "id -un", ct)).Should().Be("chantal");

        // The exit watch of the machine that ran through the outage was picked up again.
        var waiting = podman.Client.PostAsync($"v1/machines/{running["id"]}/wait?condition=stopped&timeout=60", null, ct);
        await PodmanCli.RunAsync(["stop", "-t", "5", running["id"]!.GetValue<string>()], ct);
        using (var waited = await waiting)
        {
            (await waited.JsonAsync(ct))["state"]!.GetValue<string>().Should().Be("stopped");
        }

        await podman.Client.DeleteMachineAsync(running["id"]!.GetValue<string>(), ct);
        await podman.Client.DeleteMachineAsync(again["id"]!.GetValue<string>(), ct);
        (await PodmanCli.ContainersAsync(podman.InstanceLabel, ct)).Should().BeEmpty();
    }

    [Fact(Timeout = 120_000)]
    public async Task A_host_tool_missing_for_podman_is_named_in_the_problem_and_the_machine_leaves_nothing_behind()
    {
        // netavark sets up the published SSH port with iptables, found on PATH (/usr/sbin): a service that cannot
        // find it fails every start, as on a fresh machine where iptables was never installed.
        var ct = TestContext.Current.CancellationToken;
        var image = await PodmanTestImage.GetAsync(ct);
        using var directory = new TempDirectory();
        await using var service = await PodmanService.StartAsync(directory.File("podman.sock"), ct, path: "/usr/bin:/bin");
        await using var podman = await PodmanDaemon.StartAsync(service, image, "", 10, "destroy", ct);
        var id = (await podman.Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>();

        using (var boot = await podman.Client.PostAsync($"v1/machines/{id}/boot?wait=ssh&timeout=60", null, ct))
        {
            var problem = await boot.ShouldBeProblemAsync(HttpStatusCode.BadGateway, "backend-failed", ct);
            problem["detail"]!.GetValue<string>().Should().Contain("netavark: No such file or directory");
        }

        using (var machine = await podman.Client.GetAsync($"v1/machines/{id}", ct))
        {
            var body = await machine.JsonAsync(ct);
            body["state"]!.GetValue<string>().Should().Be("failed");
            body["last_error"]!.GetValue<string>().Should().Contain("netavark");
        }

        await podman.Client.DeleteMachineAsync(id, ct);
        (await PodmanCli.ContainersAsync(podman.InstanceLabel, ct)).Should().BeEmpty();
    }
}
