using Falk.Tests.Fixtures;

namespace Falk.Tests.Protocol;

/// <summary>Kevin's job over the control protocol on real podman containers, with the host key read from the image.</summary>
public sealed class KevinPodmanTests(PodmanFixture fixture) : IClassFixture<PodmanFixture>
{
    [Fact(Timeout = 180_000)]
    public async Task Kevin_runs_a_job_on_a_podman_pool_and_checks_the_key_read_from_the_image()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var podman = await fixture.StartDaemonAsync(ct, templates: $"""
            [kevin-podman-1]
            name = podman-pool
            type = podman
            base_image = {fixture.Image.Reference}
            ssh_user = {PodmanTestImage.User}
            ssh_host = localhost

            [kevin-podman-2]
            name = podman-pool
            type = podman
            base_image = {fixture.Image.Reference}
            ssh_user = {PodmanTestImage.User}
            ssh_host = localhost
            """);
        await using var kevin = await LegacyProtocolClient.ConnectAsync(podman.Daemon.SocketPath, ct);

        var machines = await kevin.KevinHandshakeAsync(sendLogin: true, ct);
        machines["kevin-podman-2"]!.AsArray().Select(n => n!.GetValue<string>()).Should().Equal("Podman", "podman-pool");
        var (_, info, output) = await kevin.KevinJobAsync("kevin-podman-2", fixture.Image.ClientKeyPath, "echo hi-$(id -un)", ct);

        output.Should().Be("hi-chantal");
        info["ssh_known_host_key"]!.GetValue<string>().Should().StartWith("ssh-ed25519 ").And.NotBe(fixture.Image.HostKey.PublicKeyLine, "podman machines pin a key made for each");
        info["ssh_host"]!.GetValue<string>().Should().Be("127.0.0.1");
        (await PodmanCli.ContainersAsync(podman.InstanceLabel, ct)).Should().BeEmpty("Cleanup removed the container");
    }
}
