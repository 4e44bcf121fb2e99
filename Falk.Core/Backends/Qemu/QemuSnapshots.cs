using System.Text.Json.Nodes;
using Falk.Core.Machines;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Backends.Qemu;

/// <summary>
/// The snapshots of one machine, kept inside its overlay: <c>savevm</c>/<c>loadvm</c>/<c>delvm</c> with memory over the
/// monitor of a running QEMU, <c>qemu-img snapshot</c> of the disk alone when no QEMU has the overlay open.
/// </summary>
internal sealed class QemuSnapshots(string machineId, string overlay, QemuImg qemuImg, ILogger logger)
{
    /// <param name="running">The monitor of the QEMU running the machine; null when it does not run.</param>
    public async Task<SnapshotInfo> CreateAsync(string name, QemuMonitor? running, CancellationToken cancellationToken)
    {
        if (running is not null)
        {
            await running.HumanMonitorAsync($"savevm {name}", cancellationToken).ConfigureAwait(false);
            QemuLog.Snapshot(logger, machineId, name, "taken", "live, with memory");
        }
        else
        {
            await qemuImg.CreateSnapshotAsync(overlay, name, cancellationToken).ConfigureAwait(false);
            QemuLog.Snapshot(logger, machineId, name, "taken", "disk only");
        }

        var snapshots = await ListAsync(running, cancellationToken).ConfigureAwait(false);
        return snapshots.LastOrDefault(s => s.Name == name)
            ?? throw new BackendOperationException($"snapshot {name} of machine {machineId} was taken but is not listed");
    }

    public async Task<IReadOnlyList<SnapshotInfo>> ListAsync(QemuMonitor? running, CancellationToken cancellationToken)
    {
        if (running is null)
        {
            return await qemuImg.ListSnapshotsAsync(overlay, cancellationToken).ConfigureAwait(false);
        }

        // While QEMU has the overlay open, it is the one to ask.
        var blocks = await running.ExecuteAsync("query-block", cancellationToken).ConfigureAwait(false) as JsonArray;
        var image = blocks?.OfType<JsonObject>()
            .Select(b => b["inserted"]?["image"] as JsonObject)
            .FirstOrDefault(i => i?["filename"]?.GetValue<string>() == overlay);
        return QemuImg.ParseSnapshots(image?["snapshots"] as JsonArray);
    }

    public async Task RestoreAsync(string name, QemuMonitor? running, CancellationToken cancellationToken)
    {
        if (running is not null)
        {
            await running.HumanMonitorAsync($"loadvm {name}", cancellationToken).ConfigureAwait(false);
            QemuLog.Snapshot(logger, machineId, name, "restored", "live");
        }
        else
        {
            await qemuImg.ApplySnapshotAsync(overlay, name, cancellationToken).ConfigureAwait(false);
            QemuLog.Snapshot(logger, machineId, name, "restored", "disk only");
        }
    }

    public async Task DeleteAsync(string name, QemuMonitor? running, CancellationToken cancellationToken)
    {
        if (running is not null)
        {
            await running.HumanMonitorAsync($"delvm {name}", cancellationToken).ConfigureAwait(false);
        }
        else
        {
            await qemuImg.DeleteSnapshotAsync(overlay, name, cancellationToken).ConfigureAwait(false);
        }

        QemuLog.Snapshot(logger, machineId, name, "deleted", running is not null ? "live" : "disk only");
    }
}
