using Falk.Tests.Backends.Qemu;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Hardening;

/// <summary>
/// Issue 13 items 7 and 8 for QEMU: a running guest's QEMU is under its seccomp sandbox, and its overlay, QMP socket,
/// pid file and console log are the daemon user's alone.
/// </summary>
[Collection("qemu")]
public sealed class QemuConfinementTests(QemuDaemonFixture fixture) : IClassFixture<QemuDaemonFixture>
{
    [Fact(Timeout = 240_000)]
    public async Task A_running_guests_QEMU_is_sandboxed_and_its_overlay_and_logs_are_the_daemon_users_alone()
    {
        var ct = TestContext.Current.CancellationToken;
        var id = (await fixture.Client.CreateAsync("guest", ct))["id"]!.GetValue<string>();
        await fixture.Client.BootAsync(id, ct, "?wait=ssh&timeout=120");

        var qemu = ProcessTable.WithArgument("falk-" + id).Should().ContainSingle().Subject;
        var arguments = (await File.ReadAllTextAsync($"/proc/{qemu}/cmdline", ct)).Split('\0');
        arguments.Should().ContainInConsecutiveOrder("-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");
        (await File.ReadAllLinesAsync($"/proc/{qemu}/status", ct)).Should().Contain("Seccomp:\t2", "the kernel applies QEMU's seccomp filter");

        var overlay = Path.Combine("machines", id, "overlay.qcow2");
        StateFiles.ShouldBePrivate(fixture.StateDirectory, expectAtLeast: ["falk.db", overlay]);
        await StateFiles.ShouldBeUnreadableByNobodyAsync(Path.Combine(fixture.StateDirectory, overlay), ct);

        await fixture.Client.DeleteMachineAsync(id, ct);
    }
}
