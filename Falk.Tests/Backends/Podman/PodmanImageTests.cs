using System.Net;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Backends.Podman;

/// <summary>Snapshots and management commits of podman machines: images committed through the API, tags moved atomically.</summary>
public sealed class PodmanImageTests(PodmanFixture fixture) : IClassFixture<PodmanFixture>
{
    [Fact(Timeout = 120_000)]
    public async Task A_deleted_snapshot_is_gone_from_the_list_and_from_podman_and_the_machine_runs_on()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var podman = await fixture.StartDaemonAsync(ct);
        var machine = await podman.Client.BootAsync((await podman.Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>(), ct);
        var id = machine["id"]!.GetValue<string>();
        var gone = $"gone{Random.Shared.Next(100_000, 999_999)}";
        foreach (var name in new[] { gone, "kept" })
        {
            using var snapshot = await podman.Client.PostJsonAsync($"v1/machines/{id}/snapshots", new { name }, ct);
            snapshot.StatusCode.Should().Be(HttpStatusCode.Created, await snapshot.Content.ReadAsStringAsync(ct));
        }

        var imagesOfGone = new[] { "images", "-q", "--filter", $"label=org.falk.snapshot={gone}" };
        (await PodmanCli.RunAsync(imagesOfGone, ct)).Should().ContainSingle();

        using (var deleted = await podman.Client.DeleteAsync($"v1/machines/{id}/snapshots/{gone}", ct))
        {
            deleted.StatusCode.Should().Be(HttpStatusCode.NoContent, await deleted.Content.ReadAsStringAsync(ct));
        }

        using (var list = await podman.Client.GetAsync($"v1/machines/{id}/snapshots", ct))
        {
            (await list.JsonAsync(ct)).AsArray().Select(s => s!["name"]!.GetValue<string>()).Should().Equal("kept");
        }

        (await PodmanCli.RunAsync(imagesOfGone, ct)).Should().BeEmpty();
        (await PodmanSsh.RunAsync(machine, fixture.Image, "echo still here", ct)).Should().Be("still here");
        await podman.Client.DeleteMachineAsync(id, ct);
    }

    [Fact(Timeout = 120_000)]
    public async Task A_restored_snapshot_no_longer_has_a_file_written_after_it_and_the_machine_keeps_its_id_and_port()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var podman = await fixture.StartDaemonAsync(ct);
        var machine = await podman.Client.BootAsync((await podman.Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>(), ct);
        var id = machine["id"]!.GetValue<string>();
        await PodmanSsh.RunAsync(machine, fixture.Image, "echo before > ~/before", ct);

        using (var snapshot = await podman.Client.PostJsonAsync($"v1/machines/{id}/snapshots", new { name = "clean" }, ct))
        {
            snapshot.StatusCode.Should().Be(HttpStatusCode.Created, await snapshot.Content.ReadAsStringAsync(ct));
        }

        await PodmanSsh.RunAsync(machine, fixture.Image, "echo after > ~/after", ct);
        using (var list = await podman.Client.GetAsync($"v1/machines/{id}/snapshots", ct))
        {
            var snapshots = (await list.JsonAsync(ct)).AsArray();
            snapshots.Should().ContainSingle();
            snapshots[0]!["name"]!.GetValue<string>().Should().Be("clean");
            snapshots[0]!["size_bytes"]!.GetValue<long>().Should().BePositive();
            snapshots[0]!["created_at"]!.GetValue<DateTimeOffset>().Should().BeCloseTo(DateTimeOffset.UtcNow, TimeSpan.FromMinutes(2));
        }

        using (var restore = await podman.Client.PostAsync($"v1/machines/{id}/snapshots/clean/restore", null, ct))
        {
            var restored = await restore.JsonAsync(ct);
            restore.StatusCode.Should().Be(HttpStatusCode.OK, restored.ToJsonString());
            restored["state"]!.GetValue<string>().Should().Be("running");
            restored["ssh"]!["port"]!.GetValue<int>().Should().Be(machine["ssh"]!["port"]!.GetValue<int>());
        }

        var files = await Falk.Core.Waiting.Wait.UntilAsync(async wait =>
        {
            try
            {
                return Falk.Core.Waiting.ProbeOutcome.Done(await PodmanSsh.RunAsync(machine, fixture.Image, "ls ~", wait));
            }
            catch (Exception e) when (e is Renci.SshNet.Common.SshException or System.Net.Sockets.SocketException)
            {
                return Falk.Core.Waiting.ProbeOutcome.NotYet<string>(e.Message);
            }
        }, TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(30), "ssh into the restored machine", ct);
        files.Split('\n').Should().Equal("before");
        (await PodmanCli.RunAsync(["ps", "-q", "--filter", "label=" + podman.InstanceLabel], ct)).Should().HaveCount(1, "the old container was replaced, not kept");

        // A stopped machine still reports its stop through the engine's wait after the replacement.
        var waiting = podman.Client.PostAsync($"v1/machines/{id}/wait?condition=stopped&timeout=60", null, ct);
        await PodmanCli.RunAsync(["stop", "-t", "5", id], ct);
        using (var waited = await waiting)
        {
            (await waited.JsonAsync(ct))["state"]!.GetValue<string>().Should().Be("stopped");
        }

        await podman.Client.DeleteMachineAsync(id, ct);
        (await PodmanCli.ImagesAsync(podman.InstanceLabel, ct)).Should().BeEmpty("deleting the machine deletes its snapshot images");
        (await PodmanCli.ContainersAsync(podman.InstanceLabel, ct)).Should().BeEmpty();
    }

    [Fact(Timeout = 120_000)]
    public async Task Two_templates_on_one_base_image_each_get_a_management_machine_since_each_commits_to_its_own_images()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var podman = await fixture.StartDaemonAsync(ct, $"""
            [sshd-twin]
            type = podman
            base_image = {fixture.Image.Reference}
            ssh_user = {PodmanTestImage.User}
            ssh_host = 127.0.0.1
            """);
        var ids = new List<string>();
        foreach (var template in new[] { "sshd", "sshd-twin" })
        {
            using var response = await podman.Client.PostJsonAsync("v1/machines", new { template, manage = true }, ct);
            var body = await response.JsonAsync(ct);
            response.StatusCode.Should().Be(HttpStatusCode.Created, body.ToJsonString());
            ids.Add(body["id"]!.GetValue<string>());
        }

        using (var second = await podman.Client.PostJsonAsync("v1/machines", new { template = "sshd-twin", manage = true }, ct))
        {
            await second.ShouldBeProblemAsync(HttpStatusCode.Conflict, "management-conflict", ct);
        }

        foreach (var id in ids)
        {
            await podman.Client.DeleteMachineAsync(id, ct);
        }
    }

    [Fact(Timeout = 180_000)]
    public async Task A_commit_reaches_the_next_machine_but_not_one_made_before_and_the_old_version_goes_when_unused()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var podman = await fixture.StartDaemonAsync(ct);
        var before = await podman.Client.BootAsync((await podman.Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>(), ct);

        using var manageResponse = await podman.Client.PostJsonAsync("v1/machines", new { template = "sshd", manage = true }, ct);
        var manage = await manageResponse.JsonAsync(ct);
        manageResponse.StatusCode.Should().Be(HttpStatusCode.Created, manage.ToJsonString());
        var manageId = manage["id"]!.GetValue<string>();
        using (var second = await podman.Client.PostJsonAsync("v1/machines", new { template = "sshd", manage = true }, ct))
        {
            await second.ShouldBeProblemAsync(HttpStatusCode.Conflict, "management-conflict", ct);
        }

        manage = await podman.Client.BootAsync(manageId, ct);
        await PodmanSsh.RunAsync(manage, fixture.Image, "echo v1 > ~/installed", ct);
        using (var commit = await podman.Client.PostJsonAsync($"v1/machines/{manageId}/commit", new { timeout_seconds = 10 }, ct))
        {
            commit.StatusCode.Should().Be(HttpStatusCode.OK, await commit.Content.ReadAsStringAsync(ct));
        }

        var after = await podman.Client.BootAsync((await podman.Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>(), ct);
        (await PodmanSsh.RunAsync(after, fixture.Image, "cat ~/installed", ct)).Should().Be("v1");
        (await PodmanSsh.RunAsync(before, fixture.Image, "ls ~/installed 2>/dev/null || echo absent", ct)).Should().Be("absent");
        after["ssh"]!["host_key_source"]!.GetValue<string>().Should().Be("machine");

        var current = $"localhost/falk/{podman.Instance}/templates/sshd:current";
        (await PodmanCli.RunAsync(["image", "inspect", "--format", "{{.Id}}", current], ct)).Should().ContainSingle();
        await podman.Client.DeleteMachineAsync(manageId, ct);

        // A second commit: the first version is used by `after` and stays until that machine is gone.
        using (var again = await podman.Client.PostJsonAsync("v1/machines", new { template = "sshd", manage = true }, ct))
        {
            manage = await again.JsonAsync(ct);
            again.StatusCode.Should().Be(HttpStatusCode.Created, manage.ToJsonString());
        }

        manageId = manage["id"]!.GetValue<string>();
        manage = await podman.Client.BootAsync(manageId, ct);
        await PodmanSsh.RunAsync(manage, fixture.Image, "echo v2 > ~/installed", ct);
        using (var commit = await podman.Client.PostJsonAsync($"v1/machines/{manageId}/commit", new { timeout_seconds = 10 }, ct))
        {
            commit.StatusCode.Should().Be(HttpStatusCode.OK, await commit.Content.ReadAsStringAsync(ct));
        }

        await podman.Client.DeleteMachineAsync(manageId, ct);
        var versionLabel = "org.falk.image-kind=version";
        (await VersionsAsync(podman, ct)).Should().HaveCount(2, "v1 is still used by a machine");

        await podman.Client.DeleteMachineAsync(after["id"]!.GetValue<string>(), ct);
        (await VersionsAsync(podman, ct)).Should().ContainSingle($"only the current version is left once no machine uses v1 ({versionLabel})");
        var newest = await podman.Client.BootAsync((await podman.Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>(), ct);
        (await PodmanSsh.RunAsync(newest, fixture.Image, "cat ~/installed", ct)).Should().Be("v2");
    }

    /// <summary>
    /// This daemon's version images. podman 4.3 ORs several label filters, so each label is asked for alone and the
    /// answers intersected (another test class's daemon may be committing versions at the same time).
    /// </summary>
    private static async Task<IReadOnlyList<string>> VersionsAsync(PodmanDaemon podman, CancellationToken ct)
    {
        var ours = await PodmanCli.ImagesAsync(podman.InstanceLabel, ct);
        var versions = await PodmanCli.ImagesAsync("org.falk.image-kind=version", ct);
        return ours.Intersect(versions).ToList();
    }
}
