using System.Net;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Backends.Podman;

/// <summary>The podman backend through the real daemon and a real podman API service: the life of a machine.</summary>
public sealed class PodmanLifecycleTests(PodmanFixture fixture) : IClassFixture<PodmanFixture>
{
    [Fact(Timeout = 120_000)]
    public async Task A_machine_boots_from_base_image_and_chantal_logs_in_with_the_host_key_read_from_the_image()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var podman = await fixture.StartDaemonAsync(ct);

        var created = await podman.Client.CreateAsync("sshd", ct, new Dictionary<string, string> { ["kevin.job"] = "42" });
        var id = created["id"]!.GetValue<string>();
        var port = created["ssh"]!["port"]!.GetValue<int>();
        var booted = await podman.Client.BootAsync(id, ct);

        booted["state"]!.GetValue<string>().Should().Be("running");
        booted["ssh"]!["host_key_source"]!.GetValue<string>().Should().Be("image");
        booted["ssh"]!["known_host_key"]!.GetValue<string>().Should().Be(fixture.Image.HostKey.PublicKeyLine);
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
}
