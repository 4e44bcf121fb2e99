using System.Net;
using Falk.Core.Backends.Qemu.Qmp;
using Falk.Core.Waiting;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Backends.Qemu;

/// <summary>A guest paused by someone else at a QEMU monitor shows as paused, not running.</summary>
[Collection("qemu")]
public sealed class QemuPauseTests(QemuDaemonFixture fixture) : IClassFixture<QemuDaemonFixture>
{
    private HttpClient Client => fixture.Client;

    [Fact(Timeout = 240_000)]
    public async Task A_guest_paused_at_another_monitor_is_paused_until_it_resumes_and_a_paused_machine_can_be_stopped()
    {
        var ct = TestContext.Current.CancellationToken;
        var created = await Client.CreateAsync("monitored", ct);
        var id = created["id"]!.GetValue<string>();
        await Client.BootAsync(id, ct, "?wait=ssh&timeout=120");
        await using var outside = await QmpClient.ConnectAsync(fixture.OutsideMonitor, ct);

        await outside.ExecuteAsync("stop", ct);
        await StateBecomesAsync(id, "paused", ct);

        await outside.ExecuteAsync("cont", ct);
        await StateBecomesAsync(id, "running", ct);
        await fixture.Guest.SshAsync(created["ssh"]!["port"]!.GetValue<int>(), "chantal", "true", ct);

        await outside.ExecuteAsync("stop", ct);
        await StateBecomesAsync(id, "paused", ct);
        using (var stop = await Client.PostJsonAsync($"v1/machines/{id}/stop", new { timeout_seconds = 3 }, ct))
        {
            stop.StatusCode.Should().Be(HttpStatusCode.OK);
            (await stop.JsonAsync(ct))["state"]!.GetValue<string>().Should().Be("stopped");
        }

        await Client.DeleteMachineAsync(id, ct);
    }

    private Task<bool> StateBecomesAsync(string id, string state, CancellationToken ct) =>
        Wait.UntilAsync(
            async c =>
            {
                var now = (await Client.GetFromJsonNodeAsync($"v1/machines/{id}", c))["state"]!.GetValue<string>();
                return now == state ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>($"state {now}");
            },
            TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(20), $"machine {id} to be {state}", ct);
}
