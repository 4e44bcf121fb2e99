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

    [Fact(Timeout = 180_000)]
    public async Task A_commit_cut_short_by_killing_the_daemon_leaves_the_previous_version_current_and_its_partial_files_are_removed_at_the_next_start()
    {
        var ct = TestContext.Current.CancellationToken;
        using var dir = new TempDirectory();
        var baseImage = dir.File("small.qcow2");
        var versions = baseImage + ".falk-versions";
        var runner = new ProcessRunner();
        // Data in the base, so that the commit's copy (and its flush to disk) takes long enough to be cut short.
        await runner.RunAsync(new ProcessSpec(["qemu-img", "create", "-q", "-f", "qcow2", baseImage, "1G"]), TimeSpan.FromSeconds(30), ct);
        await runner.RunAsync(new ProcessSpec(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 128M", baseImage]), TimeSpan.FromMinutes(1), ct);

        var daemon = await FalkDaemon.StartAsync(fixture.Guest.Template("small", baseImage), ct, onShutdown: "keep");
        await using (daemon)
        {
            string manage;
            using (var created = await daemon.Client.PostJsonAsync("v1/machines", new { template = "small", manage = true }, ct))
            {
                created.StatusCode.Should().Be(HttpStatusCode.Created);
                manage = (await created.JsonAsync(ct))["id"]!.GetValue<string>();
            }

            var commit = daemon.Client.PostJsonAsync($"v1/machines/{manage}/commit", new { timeout_seconds = 60 }, ct);

            // The daemon dies while the new version is being written.
            var partial = await Falk.Core.Waiting.Wait.UntilAsync(
                _ => Task.FromResult(System.IO.Directory.Exists(versions) && System.IO.Directory.GetFiles(versions, "*.falk-partial") is [var file]
                    ? Falk.Core.Waiting.ProbeOutcome.Done(file) : Falk.Core.Waiting.ProbeOutcome.NotYet<string>("no partial version yet")),
                TimeSpan.FromMilliseconds(5), TimeSpan.FromSeconds(60), "the commit to begin writing", ct);
            await daemon.SignalDaemonOnlyAsync(kill: true, ct);
            await FluentActions.Awaiting(() => commit).Should().ThrowAsync<HttpRequestException>("the daemon died before it answered");
            System.IO.Directory.GetFiles(versions).Should().NotContain(f => f.EndsWith("v1.qcow2", StringComparison.Ordinal), "the commit was cut short before its version was complete");

            await daemon.StartProcessAsync(ct);

            System.IO.Directory.GetFileSystemEntries(versions).Should().BeEmpty("the partial version is removed and no current link was ever made");
            var fresh = (await daemon.Client.CreateAsync("small", ct))["id"]!.GetValue<string>();
            (await BackingFileAsync(Path.Combine(daemon.Directory.Path, "state", "machines", fresh, "overlay.qcow2"), ct)).Should().Be(baseImage, "the previous version is still the one in force");
            await daemon.Client.DeleteMachineAsync(fresh, ct);

            // The copy that was cut short runs nowhere any more (an orphaned qemu-img ends once its file is gone or done).
            await Falk.Core.Waiting.Wait.UntilAsync(
                _ => Task.FromResult(ProcessTable.WithArgument(partial).Count == 0 ? Falk.Core.Waiting.ProbeOutcome.Done(true) : Falk.Core.Waiting.ProbeOutcome.NotYet<bool>("qemu-img still writes the partial version")),
                TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(60), "the cut-short copy to end", ct);

            // The management machine was taken back; committing it now works and makes the first version.
            (await CommitWithAsync(daemon.Client, manage, ct))["version"]!.GetValue<string>().Should().Be("v1");
            await daemon.Client.DeleteMachineAsync(manage, ct);
            System.IO.Directory.GetFileSystemEntries(versions).Select(Path.GetFileName).Should().BeEquivalentTo("current", "v1.qcow2");
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

    private Task<JsonNode> CommitAsync(string id, CancellationToken ct) => CommitWithAsync(Client, id, ct);

    private static async Task<JsonNode> CommitWithAsync(HttpClient client, string id, CancellationToken ct)
    {
        using var response = await client.PostJsonAsync($"v1/machines/{id}/commit", new { timeout_seconds = 60 }, ct);
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
