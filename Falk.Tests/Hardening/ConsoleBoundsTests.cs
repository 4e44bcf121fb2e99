using System.Globalization;
using Falk.Core.Waiting;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Hardening;

/// <summary>
/// Issue 13 item 5 on the real daemon: a machine printing a gigabyte, in one line or in many, grows neither falkd's
/// memory nor its console log past the cap, and the console still answers with the newest output.
/// </summary>
public sealed class ConsoleBoundsTests
{
    private const long Cap = 4L * 1024 * 1024;
    private const long MaxDaemonRssBytes = 200L * 1024 * 1024;

    [Fact(Timeout = 600_000)]
    public Task A_gigabyte_without_a_newline_keeps_falkd_and_the_console_log_small() =>
        PrintAndCheckAsync("head -c 1G /dev/zero | tr -c x x", TestContext.Current.CancellationToken);

    // yes's "Broken pipe" goes to /dev/null: stderr is relayed beside stdout, in no fixed order with "the-end".
    [Fact(Timeout = 600_000)]
    public Task A_gigabyte_of_lines_keeps_falkd_and_the_console_log_small() =>
        PrintAndCheckAsync("yes xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx 2>/dev/null | head -c 1G", TestContext.Current.CancellationToken);

    private static async Task PrintAndCheckAsync(string printer, CancellationToken ct)
    {
        var daemon = await FalkDaemon.StartAsync($"""
            [loud]
            type = custom
            launch = /bin/sh -c '{printer}; echo; echo the-end; exec /bin/sleep 1000'
            ssh_user = nobody
            """, ct, daemonExtra: $"console_max_bytes = {Cap}");
        await using (daemon)
        {
            var id = (await daemon.Client.CreateAsync("loud", ct))["id"]!.GetValue<string>();
            await daemon.Client.BootAsync(id, ct, "");
            var log = Path.Combine(daemon.Directory.File("state"), "machines", id, "console.log");

            await Wait.UntilAsync(
                async token => await EndsWithAsync(log, "the-end\n", token) ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>("still printing"),
                TimeSpan.FromSeconds(1), TimeSpan.FromMinutes(8), "the gigabyte to be printed", ct);

            var onDisk = new FileInfo(log).Length + (File.Exists(log + ".1") ? new FileInfo(log + ".1").Length : 0);
            onDisk.Should().BeLessThanOrEqualTo(Cap);
            var console = await daemon.Client.GetStringAsync($"v1/machines/{id}/console", ct);
            console.Length.Should().BeLessThanOrEqualTo((int)Cap);
            console.Should().EndWith("\nthe-end\n").And.Contain("xxxxxxxx");
            TestContext.Current.SendDiagnosticMessage($"falkd VmHWM {PeakRss(daemon.Process!.Pid) / 1024 / 1024} MiB; console log on disk {onDisk} bytes; console answer {console.Length} chars");
            PeakRss(daemon.Process!.Pid).Should().BeLessThan(MaxDaemonRssBytes, "falkd's peak RSS (VmHWM) stays bounded");
            await daemon.Client.DeleteMachineAsync(id, ct);
        }
    }

    private static async Task<bool> EndsWithAsync(string path, string end, CancellationToken ct)
    {
        if (!File.Exists(path))
        {
            return false;
        }

        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        await using (stream)
        {
            if (stream.Length < end.Length)
            {
                return false;
            }

            stream.Position = stream.Length - end.Length;
            using var reader = new StreamReader(stream);
            return await reader.ReadToEndAsync(ct) == end;
        }
    }

    private static long PeakRss(int pid) =>
        long.Parse(File.ReadLines($"/proc/{pid}/status").Single(l => l.StartsWith("VmHWM:", StringComparison.Ordinal)).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
}
