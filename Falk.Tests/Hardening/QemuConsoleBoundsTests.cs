using Falk.Core.Waiting;
using Falk.Tests.Backends.Qemu;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Hardening;

/// <summary>
/// Issue 13 item 5 for QEMU: the serial console is read by falkd from QEMU's socket into a console log capped at
/// console_max_bytes, the newest output kept, and the console API serves it.
/// </summary>
[Collection("qemu")]
public sealed class QemuConsoleBoundsTests
{
    private const long Cap = 1024 * 1024;

    [Fact(Timeout = 420_000)]
    public async Task A_guest_printing_more_than_the_cap_to_its_serial_port_keeps_the_console_log_within_it_and_the_newest_output()
    {
        var ct = TestContext.Current.CancellationToken;
        var guest = await QemuGuest.BuildAsync(ct);
        using var work = new TempDirectory();
        var baseImage = work.File("base.qcow2");
        File.Copy(guest.BaseImage, baseImage);
        var daemon = await FalkDaemon.StartAsync(guest.Template("guest", baseImage), ct, daemonExtra: $"console_max_bytes = {Cap}");
        await using (daemon)
        {
            var created = await daemon.Client.CreateAsync("guest", ct);
            var id = created["id"]!.GetValue<string>();
            var port = created["ssh"]!["port"]!.GetValue<int>();
            await daemon.Client.BootAsync(id, ct, "?wait=ssh&timeout=150");
            var log = Path.Combine(daemon.Directory.File("state"), "machines", id, "console.log");

            // 1.6 times the cap, then a last line: only the newest part can be kept. The console log is read whole here
            // (its current part is at most half the cap).
            await guest.SshAsync(port, "root", "yes falk-console-filler-0123456789abcdefghijklmnopqrstuvwxyz | head -c 1677722 > /dev/ttyS0; echo falk-console-end > /dev/ttyS0", ct);
            await Wait.UntilAsync(
                async token => await ReadAllAsync(log, token) is var text && text.Contains("falk-console-end\r\n", StringComparison.Ordinal)
                    ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>($"the console log ends in {System.Text.Json.JsonSerializer.Serialize(text[^Math.Min(text.Length, 80)..])}"),
                TimeSpan.FromMilliseconds(200), TimeSpan.FromMinutes(2), "the guest's output to reach the console log", ct);

            var onDisk = new FileInfo(log).Length + (File.Exists(log + ".1") ? new FileInfo(log + ".1").Length : 0);
            onDisk.Should().BeLessThanOrEqualTo(Cap).And.BeGreaterThan(Cap / 4, "the older part is kept beside the newest");
            var console = await daemon.Client.GetStringAsync($"v1/machines/{id}/console", ct);
            console.Length.Should().BeLessThanOrEqualTo((int)Cap);
            console.Should().Contain("falk-console-filler").And.Contain("falk-console-end\r\n", "the newest output is kept (the guest's sshd may log after it)");
            console.Should().NotContain("Linux version", "the boot messages are the oldest output, dropped for the newest");
            await daemon.Client.DeleteMachineAsync(id, ct);
        }
    }

    private static async Task<string> ReadAllAsync(string path, CancellationToken ct)
    {
        if (!File.Exists(path))
        {
            return string.Empty;
        }

        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        await using (stream)
        {
            using var reader = new StreamReader(stream);
            return await reader.ReadToEndAsync(ct);
        }
    }
}
