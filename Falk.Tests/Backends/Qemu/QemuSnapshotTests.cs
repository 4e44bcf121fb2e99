using System.Net;
using System.Text.Json.Nodes;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Backends.Qemu;

/// <summary>Snapshots inside a machine's overlay: live ones with memory while it runs, disk ones while it is off.</summary>
[Collection("qemu")]
public sealed class QemuSnapshotTests(QemuDaemonFixture fixture) : IClassFixture<QemuDaemonFixture>
{
    private HttpClient Client => fixture.Client;

    [Fact(Timeout = 240_000)]
    public async Task A_live_snapshot_holds_memory_and_disk_and_restoring_it_drops_what_came_after()
    {
        var ct = TestContext.Current.CancellationToken;
        var (id, port) = await BootAsync(ct);
        await fixture.Guest.SshAsync(port, "chantal", "echo before > /home/chantal/before", ct);

        // A running process is state only memory holds: it must come back with the snapshot.
        const string Sleeper = "ps | grep '[s]leep 7777' || echo none";
        var sleeperPid = (await fixture.Guest.SshAsync(port, "chantal", "sleep 7777 </dev/null >/dev/null 2>&1 & echo $!", ct)).Trim();
        (await fixture.Guest.SshAsync(port, "chantal", Sleeper, ct)).Should().Contain("sleep 7777");

        var snapshot = await PostOkAsync($"v1/machines/{id}/snapshots", new { name = "live1" }, HttpStatusCode.Created, ct);
        snapshot["name"]!.GetValue<string>().Should().Be("live1");
        snapshot["includes_memory"]!.GetValue<bool>().Should().BeTrue();
        snapshot["size_bytes"]!.GetValue<long>().Should().BePositive();
        snapshot["created_at"]!.GetValue<DateTimeOffset>().Should().BeCloseTo(DateTimeOffset.UtcNow, TimeSpan.FromMinutes(2));

        await fixture.Guest.SshAsync(port, "chantal", "echo after > /home/chantal/after && sync", ct);
        await fixture.Guest.SshAsync(port, "chantal", $"kill {sleeperPid}; while kill -0 {sleeperPid} 2>/dev/null; do sleep 0.1; done; echo killed", ct);
        (await fixture.Guest.SshAsync(port, "chantal", Sleeper, ct)).Should().NotContain("sleep 7777", "the process was ended after the snapshot");
        await PostOkAsync($"v1/machines/{id}/snapshots/live1/restore", null, HttpStatusCode.OK, ct);

        (await fixture.Guest.SshAsync(port, "chantal", Sleeper, ct)).Should().Contain("sleep 7777", "restoring the memory brings the process back");

        var files = await fixture.Guest.SshAsync(port, "chantal", "ls /home/chantal", ct);
        files.Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().Contain("before").And.NotContain("after");
        var list = (await Client.GetFromJsonNodeAsync($"v1/machines/{id}/snapshots", ct)).AsArray();
        list.Select(s => s!["name"]!.GetValue<string>()).Should().Equal("live1");

        await PostOkAsync($"v1/machines/{id}/snapshots", new { name = "live2" }, HttpStatusCode.Created, ct);
        await DeleteSnapshotAsync(id, "live1", HttpStatusCode.NoContent, ct);
        (await Client.GetFromJsonNodeAsync($"v1/machines/{id}/snapshots", ct)).AsArray().Select(s => s!["name"]!.GetValue<string>()).Should().Equal("live2");
        (await DeleteSnapshotAsync(id, "live1", HttpStatusCode.NotFound, ct))["type"]!.GetValue<string>().Should().EndWith("snapshot-not-found");
        await Client.DeleteMachineAsync(id, ct);
    }

    [Fact(Timeout = 240_000)]
    public async Task A_stopped_machine_gets_disk_snapshots_that_restore_and_leave_with_the_overlay()
    {
        var ct = TestContext.Current.CancellationToken;
        var (id, port) = await BootAsync(ct);
        await fixture.Guest.SshAsync(port, "chantal", "echo one > /home/chantal/one && sync", ct);
        using (var stop = await Client.PostJsonAsync($"v1/machines/{id}/stop", new { timeout_seconds = 60 }, ct))
        {
            stop.StatusCode.Should().Be(HttpStatusCode.OK);
        }

        var snapshot = await PostOkAsync($"v1/machines/{id}/snapshots", new { name = "disk1" }, HttpStatusCode.Created, ct);
        snapshot["includes_memory"]!.GetValue<bool>().Should().BeFalse();
        using (var duplicate = await Client.PostJsonAsync($"v1/machines/{id}/snapshots", new { name = "disk1" }, ct))
        {
            await duplicate.ShouldBeProblemAsync(HttpStatusCode.Conflict, "snapshot-exists", ct);
        }

        await PostOkAsync($"v1/machines/{id}/snapshots", new { name = "disk2" }, HttpStatusCode.Created, ct);
        await DeleteSnapshotAsync(id, "disk2", HttpStatusCode.NoContent, ct);
        (await Client.GetFromJsonNodeAsync($"v1/machines/{id}/snapshots", ct)).AsArray().Select(s => s!["name"]!.GetValue<string>()).Should().Equal("disk1");

        await Client.BootAsync(id, ct, "?wait=ssh&timeout=120");
        await fixture.Guest.SshAsync(port, "chantal", "rm /home/chantal/one && echo two > /home/chantal/two && sync", ct);
        using (var stop = await Client.PostJsonAsync($"v1/machines/{id}/stop", new { timeout_seconds = 60 }, ct))
        {
            stop.StatusCode.Should().Be(HttpStatusCode.OK);
        }

        await PostOkAsync($"v1/machines/{id}/snapshots/disk1/restore", null, HttpStatusCode.OK, ct);
        await Client.BootAsync(id, ct, "?wait=ssh&timeout=120");

        var files = await fixture.Guest.SshAsync(port, "chantal", "ls /home/chantal", ct);
        files.Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().Contain("one").And.NotContain("two");
        var overlay = Path.Combine(fixture.StateDirectory, "machines", id, "overlay.qcow2");
        File.Exists(overlay).Should().BeTrue();
        await Client.DeleteMachineAsync(id, ct);
        File.Exists(overlay).Should().BeFalse("snapshots live in the overlay and go with it");
    }

    private async Task<(string Id, int Port)> BootAsync(CancellationToken ct)
    {
        var created = await Client.CreateAsync("guest", ct);
        var id = created["id"]!.GetValue<string>();
        await Client.BootAsync(id, ct, "?wait=ssh&timeout=120");
        return (id, created["ssh"]!["port"]!.GetValue<int>());
    }

    private async Task<JsonNode> DeleteSnapshotAsync(string id, string name, HttpStatusCode expected, CancellationToken ct)
    {
        using var response = await Client.DeleteAsync($"v1/machines/{id}/snapshots/{name}", ct);
        var body = await response.Content.ReadAsStringAsync(ct);
        response.StatusCode.Should().Be(expected, body);
        return body.Length == 0 ? new JsonObject() : JsonNode.Parse(body)!;
    }

    private async Task<JsonNode> PostOkAsync(string path, object? body, HttpStatusCode expected, CancellationToken ct)
    {
        using var response = body is null ? await Client.PostAsync(path, null, ct) : await Client.PostJsonAsync(path, body, ct);
        var json = await response.JsonAsync(ct);
        response.StatusCode.Should().Be(expected, json.ToJsonString());
        return json;
    }
}
