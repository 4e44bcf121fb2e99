using System.Text.Json.Nodes;
using Falk.Core.Machines;
using Falk.Core.Waiting;

namespace Falk.Core.Backends.Qemu;

/// <summary>
/// Saves a running guest (memory and devices) to a file and loads it into another QEMU, over QMP. QEMU 7.2 has no
/// <c>file:</c> migration and its seccomp sandbox forbids <c>exec:</c>, so Falk opens the file itself and hands QEMU the
/// descriptor (<c>getfd</c>, then <c>migrate</c> or <c>migrate-incoming</c> to <c>fd:NAME</c>). The file stays Falk's to
/// open: QEMU needs no right to the folder it lies in.
/// </summary>
internal static class QemuGuestTransfer
{
    private const string DescriptorName = "falk-guest-state";

    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(10);

    /// <summary>How long writing or reading a saved guest may take (a few hundred MB, from the page cache).</summary>
    private static readonly TimeSpan TransferTimeout = TimeSpan.FromMinutes(2);

    /// <summary>Stops the guest and writes it to <paramref name="path"/> (a new file); the guest stays stopped. Returns the file's size.</summary>
    public static async Task<long> SaveAsync(QemuMonitor monitor, string path, string machineId, CancellationToken cancellationToken)
    {
        // Stopped first: the disk layer under the guest then holds exactly what the saved memory expects.
        await monitor.ExecuteAsync("stop", cancellationToken).ConfigureAwait(false);
        using (var file = File.OpenHandle(path, FileMode.CreateNew, FileAccess.Write))
        {
            await monitor.ExecuteAsync("getfd", new JsonObject { ["fdname"] = DescriptorName }, file, cancellationToken).ConfigureAwait(false);
        }

        await monitor.ExecuteAsync("migrate", new JsonObject { ["uri"] = "fd:" + DescriptorName }, null, cancellationToken).ConfigureAwait(false);
        await Wait.UntilAsync(
            async ct =>
            {
                var migration = await monitor.ExecuteAsync("query-migrate", ct).ConfigureAwait(false);
                return migration?["status"]?.GetValue<string>() switch
                {
                    "completed" => ProbeOutcome.Done(true),
                    "failed" or "cancelled" => throw new BackendOperationException(
                        $"machine {machineId}: saving the guest failed: {migration["error-desc"]?.GetValue<string>() ?? "QEMU gave no reason"}"),
                    var status => ProbeOutcome.NotYet<bool>($"migration {status ?? "not started"}"),
                };
            },
            PollInterval,
            TransferTimeout,
            $"saving the guest of machine {machineId} to {path}",
            cancellationToken).ConfigureAwait(false);
        return new FileInfo(path).Length;
    }

    /// <summary>
    /// Loads the guest saved in <paramref name="path"/> into a QEMU started with <c>-incoming defer</c> and lets it run.
    /// QEMU ends when the file does not fit (another machine type, devices, memory size; a damaged file): that ends the
    /// wait with the QMP connection, or <paramref name="exited"/>.
    /// </summary>
    public static async Task LoadAsync(QemuMonitor monitor, string path, Task exited, string machineId, CancellationToken cancellationToken)
    {
        using (var file = File.OpenHandle(path, FileMode.Open, FileAccess.Read))
        {
            await monitor.ExecuteAsync("getfd", new JsonObject { ["fdname"] = DescriptorName }, file, cancellationToken).ConfigureAwait(false);
        }

        await monitor.ExecuteAsync("migrate-incoming", new JsonObject { ["uri"] = "fd:" + DescriptorName }, null, cancellationToken).ConfigureAwait(false);
        await Wait.UntilAsync(
            async ct =>
            {
                if (exited.IsCompleted)
                {
                    throw new BackendOperationException($"machine {machineId}: QEMU ended while loading {path}");
                }

                var status = (await monitor.ExecuteAsync("query-status", ct).ConfigureAwait(false))?["status"]?.GetValue<string>();
                switch (status)
                {
                    case "running":
                        return ProbeOutcome.Done(true);
                    case "paused":
                        // Saved stopped, so loaded stopped: let it run.
                        await monitor.ExecuteAsync("cont", ct).ConfigureAwait(false);
                        return ProbeOutcome.NotYet<bool>("continued");
                    case "inmigrate":
                        return ProbeOutcome.NotYet<bool>("loading");
                    default:
                        throw new BackendOperationException($"machine {machineId}: QEMU is '{status}' after loading {path}");
                }
            },
            PollInterval,
            TransferTimeout,
            $"loading the saved guest {path} into machine {machineId}",
            cancellationToken,
            exited).ConfigureAwait(false);
    }
}
