using System.Diagnostics;
using Falk.Core.Machines;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Backends.Qemu;

/// <summary>
/// The first launch of a <c>boot = resume</c> machine: the template's saved guest of the machine's image version (saved
/// first if there is none) is loaded instead of a boot. The fresh overlay is moved onto the layer the guest was saved
/// with, so the disk is exactly the one the saved memory expects. On failure everything is undone (QEMU killed, the
/// overlay made again on the version, a saved guest QEMU rejected discarded) and the machine boots cold.
/// </summary>
internal sealed class QemuResumeLaunch(
    MachineSpec spec,
    string overlay,
    string backing,
    QemuImageVersions versions,
    QemuImg qemuImg,
    QemuResumeStates saved,
    ILogger logger)
{
    /// <summary>
    /// Tries to resume with <paramref name="startQemu"/> (QEMU started to load the given state file). Returns what to
    /// tell, and the layer the overlay now sits on (counted as used; the machine releases it at cleanup), or a null layer
    /// when the caller must boot cold.
    /// </summary>
    public async Task<(LaunchNote Note, string? Layer)> TryAsync(
        Func<string, CancellationToken, Task> startQemu,
        Func<Task> killQemu,
        CancellationToken cancellationToken)
    {
        var started = Stopwatch.GetTimestamp();
        QemuResumeState? state = null;
        var loading = false;
        var resumed = false;
        string reason;
        try
        {
            state = await saved.AcquireAsync(versions, backing, spec.Template, cancellationToken).ConfigureAwait(false);
            loading = true;
            await qemuImg.RebaseUnsafeAsync(overlay, state.Layer, cancellationToken).ConfigureAwait(false);
            await startQemu(state.State, cancellationToken).ConfigureAwait(false);
            resumed = true;
            QemuLog.Resumed(logger, spec.MachineId, state.State, Stopwatch.GetElapsedTime(started).TotalSeconds);
            return (new LaunchNote(MachineEventTypes.Resumed, $"from {state.State}"), state.Layer);
        }
        catch (Exception e) when (!cancellationToken.IsCancellationRequested
            && e is BackendOperationException or MachineFailedException or WaitTimeoutException or IOException or UnauthorizedAccessException)
        {
            reason = e.Message;
        }
        finally
        {
            if (state is not null && !resumed)
            {
                await UndoAsync(state, killQemu, discard: loading && !cancellationToken.IsCancellationRequested).ConfigureAwait(false);
            }
        }

        QemuLog.ResumeFellBack(logger, spec.MachineId, reason);
        return (new LaunchNote(MachineEventTypes.ResumeFailed, $"{reason}; booting cold instead"), null);
    }

    private async Task UndoAsync(QemuResumeState state, Func<Task> killQemu, bool discard)
    {
        await killQemu().ConfigureAwait(false);
        versions.Release(state.Layer);
        if (discard)
        {
            // A saved guest QEMU would not take is of no use to the next machine either; the next launch saves a new one.
            versions.DiscardResumeState(state);
        }

        File.Delete(overlay);
        await qemuImg.CreateOverlayAsync(overlay, backing, CancellationToken.None).ConfigureAwait(false);
    }
}
