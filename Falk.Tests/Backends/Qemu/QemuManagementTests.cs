using System.Net;
using System.Text.Json.Nodes;
using Falk.Core.Processes;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Backends.Qemu;

/// <summary>Management mode on an overlay too, and commits that publish image versions atomically.</summary>
[Collection("qemu")]
public sealed class QemuManagementTests(QemuDaemonFixture fixture) : IClassFixture<QemuDaemonFixture>
{
    private HttpClient Client => fixture.Client;

    private string VersionsDirectory => fixture.BaseImage + ".falk-versions";

    [Fact(Timeout = 300_000)]
    public async Task A_commit_is_booted_by_later_machines_while_machines_prepared_before_keep_their_version_and_unused_versions_go()
    {
        var ct = TestContext.Current.CancellationToken;
        var before = await Client.CreateAsync("guest", ct);
        var manage = await CreateManagedAsync(ct);
        var manageId = manage["id"]!.GetValue<string>();
        using (var second = await Client.PostJsonAsync("v1/machines", new { template = "guest", manage = true }, ct))
        {
            (await second.ShouldBeProblemAsync(HttpStatusCode.Conflict, "management-conflict", ct))["detail"]!.GetValue<string>().Should().Contain(manageId);
        }

        await Client.BootAsync(manageId, ct, "?wait=ssh&timeout=120");
        await fixture.Guest.SshAsync(manage["ssh"]!["port"]!.GetValue<int>(), "chantal", "echo installed > /home/chantal/managed", ct);

        var commit = await CommitAsync(manageId, ct);

        commit["version"]!.GetValue<string>().Should().Be("v1");
        (await Client.GetFromJsonNodeAsync($"v1/machines/{manageId}", ct))["state"]!.GetValue<string>().Should().Be("stopped", "the guest was shut down before its disk was read");
        new FileInfo(Path.Combine(VersionsDirectory, "current")).LinkTarget.Should().Be("v1.qcow2");
        System.IO.Directory.GetFiles(VersionsDirectory, "*.falk-partial").Should().BeEmpty();
        (await BackingFileAsync(Path.Combine(VersionsDirectory, "v1.qcow2"), ct)).Should().BeNull("a version is a standalone file, not an overlay");

        var after = await Client.CreateAsync("guest", ct);
        var afterId = after["id"]!.GetValue<string>();
        (await BackingFileAsync(Overlay(afterId), ct)).Should().Be(Path.Combine(VersionsDirectory, "v1.qcow2"), "overlays name the exact version, not the link");
        await Client.BootAsync(afterId, ct, "?wait=ssh&timeout=120");
        (await fixture.Guest.SshAsync(after["ssh"]!["port"]!.GetValue<int>(), "chantal", "cat /home/chantal/managed", ct)).Should().Be("installed\n");
        await Client.DeleteMachineAsync(afterId, ct);

        var beforeId = before["id"]!.GetValue<string>();
        (await BackingFileAsync(Overlay(beforeId), ct)).Should().Be(fixture.BaseImage);
        await Client.BootAsync(beforeId, ct, "?wait=ssh&timeout=120");
        (await fixture.Guest.SshAsync(before["ssh"]!["port"]!.GetValue<int>(), "chantal", "ls /home/chantal", ct)).Should().NotContain("managed");
        await Client.DeleteMachineAsync(beforeId, ct);
        await Client.DeleteMachineAsync(manageId, ct);

        // A second session commits v2; v1, current no more and used by no machine, is removed. The configured base stays.
        var again = (await CreateManagedAsync(ct))["id"]!.GetValue<string>();
        (await CommitAsync(again, ct))["version"]!.GetValue<string>().Should().Be("v2");
        await Client.DeleteMachineAsync(again, ct);
        System.IO.Directory.GetFiles(VersionsDirectory).Select(Path.GetFileName).Should().BeEquivalentTo("current", "v2.qcow2");
        new FileInfo(Path.Combine(VersionsDirectory, "current")).LinkTarget.Should().Be("v2.qcow2");
        File.Exists(fixture.BaseImage).Should().BeTrue();
    }

    [Fact(Timeout = 60_000)]
    public async Task A_commit_cut_short_leaves_the_previous_version_current_and_its_partial_files_are_removed_at_the_next_start()
    {
        var ct = TestContext.Current.CancellationToken;
        using var dir = new TempDirectory();
        var baseImage = dir.File("small.qcow2");
        await new ProcessRunner().RunAsync(new ProcessSpec(["qemu-img", "create", "-q", "-f", "qcow2", baseImage, "64M"]), TimeSpan.FromSeconds(30), ct);
        var versions = System.IO.Directory.CreateDirectory(baseImage + ".falk-versions").FullName;
        File.Copy(baseImage, Path.Combine(versions, "v1.qcow2"));
        File.CreateSymbolicLink(Path.Combine(versions, "current"), "v1.qcow2");
        // What a daemon killed during a commit leaves: a half-written version and a link not yet renamed into place.
        await File.WriteAllTextAsync(Path.Combine(versions, "v2.qcow2.mcrashed00001.falk-partial"), "half", ct);
        File.CreateSymbolicLink(Path.Combine(versions, "current.mcrashed00001.falk-partial"), "v2.qcow2.mcrashed00001.falk-partial");

        var daemon = await FalkDaemon.StartAsync(fixture.Guest.Template("small", baseImage), ct);
        await using (daemon)
        {
            System.IO.Directory.GetFileSystemEntries(versions).Select(Path.GetFileName).Should().BeEquivalentTo("current", "v1.qcow2");
            new FileInfo(Path.Combine(versions, "current")).LinkTarget.Should().Be("v1.qcow2");
            var id = (await daemon.Client.CreateAsync("small", ct))["id"]!.GetValue<string>();
            (await BackingFileAsync(Path.Combine(daemon.Directory.Path, "state", "machines", id, "overlay.qcow2"), ct)).Should().Be(Path.Combine(versions, "v1.qcow2"));
            await daemon.Client.DeleteMachineAsync(id, ct);
        }
    }

    private string Overlay(string id) => Path.Combine(fixture.StateDirectory, "machines", id, "overlay.qcow2");

    private async Task<JsonNode> CreateManagedAsync(CancellationToken ct)
    {
        using var response = await Client.PostJsonAsync("v1/machines", new { template = "guest", manage = true }, ct);
        var body = await response.JsonAsync(ct);
        response.StatusCode.Should().Be(HttpStatusCode.Created, body.ToJsonString());
        return body;
    }

    private async Task<JsonNode> CommitAsync(string id, CancellationToken ct)
    {
        using var response = await Client.PostJsonAsync($"v1/machines/{id}/commit", new { timeout_seconds = 60 }, ct);
        var body = await response.JsonAsync(ct);
        response.StatusCode.Should().Be(HttpStatusCode.OK, body.ToJsonString());
        return body;
    }

    private static async Task<string?> BackingFileAsync(string image, CancellationToken ct)
    {
        var lines = new System.Collections.Concurrent.ConcurrentQueue<string>();
        await new ProcessRunner().RunAsync(new ProcessSpec(["qemu-img", "info", "--force-share", "--output=json", image]) { OnOutputLine = lines.Enqueue }, TimeSpan.FromSeconds(30), ct);
        return JsonNode.Parse(string.Join('\n', lines))!["backing-filename"]?.GetValue<string>();
    }
}
