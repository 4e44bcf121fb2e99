using System.Net;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Backends.Podman;

/// <summary>A warm pool of podman containers: handed out running and verified, and drained of the old image by a commit.</summary>
public sealed class PodmanWarmPoolTests(PodmanFixture fixture) : IClassFixture<PodmanFixture>
{
    [Fact(Timeout = 240_000)]
    public async Task A_commit_drains_the_pool_of_the_old_image_before_it_answers_and_the_pool_refills_from_the_new_one()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var podman = await fixture.StartDaemonAsync(ct, $"""
            [warm]
            type = podman
            base_image = {fixture.Image.Reference}
            ssh_user = {PodmanTestImage.User}
            ssh_host = 127.0.0.1
            pool_size = 2
            """);
        var old = (await podman.Client.WaitForPoolAsync("warm", 2, ct)).Select(m => m["id"]!.GetValue<string>()).ToList();

        // A pooled machine is handed out running, with its own host key verified; it works, and boot changes nothing.
        var first = await podman.Client.CreateAsync("warm", ct);
        old.Should().Contain(first["id"]!.GetValue<string>());
        first["state"]!.GetValue<string>().Should().Be("running");
        first["ssh"]!["host_key_source"]!.GetValue<string>().Should().Be("machine");
        first["ssh"]!["known_host_key_verified"]!.GetValue<bool>().Should().BeTrue();
        (await podman.Client.BootAsync(first["id"]!.GetValue<string>(), ct))["state"]!.GetValue<string>().Should().Be("running");
        (await PodmanSsh.RunAsync(first, fixture.Image, "ls ~/installed 2>/dev/null || echo absent", ct)).Should().Be("absent");
        old = (await podman.Client.WaitForPoolAsync("warm", 2, ct)).Select(m => m["id"]!.GetValue<string>()).ToList();

        // A management machine never comes from the pool.
        using var manageResponse = await podman.Client.PostJsonAsync("v1/machines", new { template = "warm", manage = true }, ct);
        var manage = await manageResponse.JsonAsync(ct);
        manageResponse.StatusCode.Should().Be(HttpStatusCode.Created, manage.ToJsonString());
        var manageId = manage["id"]!.GetValue<string>();
        old.Should().NotContain(manageId);
        manage["state"]!.GetValue<string>().Should().Be("prepared");
        manage = await podman.Client.BootAsync(manageId, ct);
        await PodmanSsh.RunAsync(manage, fixture.Image, "echo v1 > ~/installed", ct);

        using (var commit = await podman.Client.PostJsonAsync($"v1/machines/{manageId}/commit", new { timeout_seconds = 10 }, ct))
        {
            commit.StatusCode.Should().Be(HttpStatusCode.OK, await commit.Content.ReadAsStringAsync(ct));
        }

        // Right after the commit answered, no machine of the old image is handed out.
        var after = await podman.Client.CreateAsync("warm", ct);
        old.Should().NotContain(after["id"]!.GetValue<string>());
        after = await podman.Client.BootAsync(after["id"]!.GetValue<string>(), ct);
        (await PodmanSsh.RunAsync(after, fixture.Image, "cat ~/installed", ct)).Should().Be("v1");

        var fresh = (await podman.Client.WaitForPoolAsync("warm", 2, ct)).Select(m => m["id"]!.GetValue<string>()).ToList();
        fresh.Should().NotIntersectWith(old);
        foreach (var id in old)
        {
            (await PodmanCli.ContainersAsync($"org.falk.machine={id}", ct)).Should().BeEmpty($"stale pooled machine {id} was destroyed");
        }

        var next = await podman.Client.CreateAsync("warm", ct);
        fresh.Should().Contain(next["id"]!.GetValue<string>());
        (await PodmanSsh.RunAsync(next, fixture.Image, "cat ~/installed", ct)).Should().Be("v1");
        podman.Daemon.Output.Should().Contain("made 2 pooled machines stale");
    }
}
