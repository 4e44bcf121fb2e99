using Falk.Tests.Backends.Qemu;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Hardening;

/// <summary>Issue 13 item 7 for QEMU: a running guest's overlay, QMP socket, pid file and console log are the daemon user's alone.</summary>
[Collection("qemu")]
public sealed class QemuStateFilesTests(QemuDaemonFixture fixture) : IClassFixture<QemuDaemonFixture>
{
    [Fact(Timeout = 240_000)]
    public async Task A_running_guests_overlay_and_logs_are_the_daemon_users_alone()
    {
        var ct = TestContext.Current.CancellationToken;
        var id = (await fixture.Client.CreateAsync("guest", ct))["id"]!.GetValue<string>();
        await fixture.Client.BootAsync(id, ct, "?wait=ssh&timeout=120");

        var overlay = Path.Combine("machines", id, "overlay.qcow2");
        StateFiles.ShouldBePrivate(fixture.StateDirectory, expectAtLeast: ["falk.db", overlay]);
        await StateFiles.ShouldBeUnreadableByNobodyAsync(Path.Combine(fixture.StateDirectory, overlay), ct);

        await fixture.Client.DeleteMachineAsync(id, ct);
    }
}
