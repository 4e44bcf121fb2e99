using System.Net;
using Falk.Core.Ssh;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Backends.Podman;

/// <summary>
/// Each podman machine gets a host key made for it at create, mounted over the image's: a job that is root in its own
/// container holds no key that proves another machine's identity. Against real podman and the image's real sshd.
/// </summary>
public sealed class PodmanHostKeyTests(PodmanFixture fixture) : IClassFixture<PodmanFixture>
{
    [Fact(Timeout = 180_000)]
    public async Task Two_machines_of_one_template_present_different_verified_keys_made_for_each()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var podman = await fixture.StartDaemonAsync(ct);

        var first = await podman.Client.CreateAsync("sshd", ct);
        var second = await podman.Client.CreateAsync("sshd", ct);
        var firstKey = first["ssh"]!["known_host_key"]!.GetValue<string>();
        var secondKey = second["ssh"]!["known_host_key"]!.GetValue<string>();

        firstKey.Should().NotBe(secondKey).And.NotBe(fixture.Image.HostKey.PublicKeyLine).And.StartWith("ssh-ed25519 ");
        foreach (var machine in new[] { first, second })
        {
            machine["ssh"]!["host_key_source"]!.GetValue<string>().Should().Be("machine");
            machine["ssh"]!["known_host_key_verified"]!.GetValue<bool>().Should().BeTrue();
        }

        // Readiness checks each server against its own key; a login pins the key the API gave.
        var firstBooted = await podman.Client.BootAsync(first["id"]!.GetValue<string>(), ct);
        var secondBooted = await podman.Client.BootAsync(second["id"]!.GetValue<string>(), ct);
        firstBooted["ssh"]!["known_host_key"]!.GetValue<string>().Should().Be(firstKey);
        secondBooted["ssh"]!["known_host_key"]!.GetValue<string>().Should().Be(secondKey);
        (await PodmanSsh.RunAsync(firstBooted, fixture.Image, "echo in-first", ct)).Should().Be("in-first");
        (await PodmanSsh.RunAsync(secondBooted, fixture.Image, "echo in-second", ct)).Should().Be("in-second");

        // Root in the first container finds only the first machine's key where sshd reads it.
        var seenByRoot = await PodmanCli.RunAsync(["exec", first["id"]!.GetValue<string>(), "ssh-keygen", "-y", "-f", "/etc/ssh/ssh_host_ed25519_key"], ct);
        seenByRoot.Should().ContainSingle().Which.Should().StartWith(firstKey);

        using var template = await podman.Client.GetAsync("v1/templates", ct);
        (await template.JsonAsync(ct)).AsArray().Single(t => t!["name"]!.GetValue<string>() == "sshd")!["host_key_source"]!.GetValue<string>().Should().Be("machine");
    }

    [Fact(Timeout = 180_000)]
    public async Task A_commit_does_not_make_the_management_machines_key_the_templates()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var podman = await fixture.StartDaemonAsync(ct);
        using var manageResponse = await podman.Client.PostJsonAsync("v1/machines", new { template = "sshd", manage = true }, ct);
        var manage = await manageResponse.JsonAsync(ct);
        manageResponse.StatusCode.Should().Be(HttpStatusCode.Created, manage.ToJsonString());
        var manageKey = manage["ssh"]!["known_host_key"]!.GetValue<string>();
        manage = await podman.Client.BootAsync(manage["id"]!.GetValue<string>(), ct);
        await PodmanSsh.RunAsync(manage, fixture.Image, "echo v1 > ~/installed", ct);

        using (var commit = await podman.Client.PostJsonAsync($"v1/machines/{manage["id"]}/commit", new { timeout_seconds = 10 }, ct))
        {
            commit.StatusCode.Should().Be(HttpStatusCode.OK, await commit.Content.ReadAsStringAsync(ct));
        }

        var current = $"localhost/falk/{podman.Instance}/templates/sshd:current";
        var inImage = await PodmanCli.RunAsync(["run", "--rm", "--entrypoint", "cat", current, "/etc/ssh/ssh_host_ed25519_key.pub"], ct);
        HostKey.TryParse(inImage.Should().ContainSingle().Subject, out _)!.PublicKeyLine.Should().Be(fixture.Image.HostKey.PublicKeyLine,
            "the machine's key was mounted, never written into the container");
        var after = await podman.Client.BootAsync((await podman.Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>(), ct);
        (await PodmanSsh.RunAsync(after, fixture.Image, "cat ~/installed", ct)).Should().Be("v1");
        after["ssh"]!["known_host_key"]!.GetValue<string>().Should().NotBe(manageKey).And.NotBe(fixture.Image.HostKey.PublicKeyLine);
        after["ssh"]!["host_key_source"]!.GetValue<string>().Should().Be("machine");
    }

    [Fact(Timeout = 120_000)]
    public async Task Host_key_image_pins_the_images_own_key_instead()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var podman = await fixture.StartDaemonAsync(ct, templates: $"""
            [shared-key]
            type = podman
            base_image = {fixture.Image.Reference}
            ssh_user = chantal
            ssh_host = 127.0.0.1
            host_key = image
            """);

        var booted = await podman.Client.BootAsync((await podman.Client.CreateAsync("shared-key", ct))["id"]!.GetValue<string>(), ct);

        booted["ssh"]!["host_key_source"]!.GetValue<string>().Should().Be("image");
        booted["ssh"]!["known_host_key"]!.GetValue<string>().Should().Be(fixture.Image.HostKey.PublicKeyLine);
    }

    [Fact(Timeout = 120_000)]
    public async Task Podmans_own_log_of_a_container_stays_under_console_max_bytes()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var podman = await fixture.StartDaemonAsync(ct, daemonExtra: "console_max_bytes = 1048576");
        var booted = await podman.Client.BootAsync((await podman.Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>(), ct);
        var id = booted["id"]!.GetValue<string>();

        // A guest that is root in its container prints 8 MiB to the container's output.
        await PodmanCli.RunAsync(["exec", id, "sh", "-c", "yes falk-console-flood | head -c 8388608 > /proc/1/fd/2; echo the-end > /proc/1/fd/2"], ct);

        var logPath = (await PodmanCli.RunAsync(["inspect", "--format", "{{.HostConfig.LogConfig.Path}}", id], ct)).Should().ContainSingle().Subject;
        var size = new FileInfo(logPath).Length;
        size.Should().BeLessThanOrEqualTo(1048576 + 64 * 1024, "podman's k8s-file log is capped at console_max_bytes");
        (await PodmanCli.RunAsync(["inspect", "--format", "{{.HostConfig.LogConfig.Size}}", id], ct)).Should().ContainSingle();
    }
}
