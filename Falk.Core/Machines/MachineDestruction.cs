using Microsoft.Extensions.Logging;

namespace Falk.Core.Machines;

/// <summary>
/// Destroys machines: cancels whatever they do, forces them off, removes what was made for them, and gives back
/// everything they held (record, folder, admission, idempotency key). DELETE, lease expiry and shutdown all come here.
/// </summary>
public sealed class MachineDestruction(MachineTable table, MachineTransitions transitions,
    IdempotentCreates idempotency, MachineEvents events, ILogger<MachineService> logger)
{
    /// <summary>Destroys the machine; a second destroy while one runs waits for it.</summary>
    internal async Task DestroyAsync(Machine machine, CancellationToken cancellationToken)
    {
        TaskCompletionSource? ongoing = null;
        var deletion = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (machine.Sync)
        {
            if (machine.Deletion is not null)
            {
                ongoing = machine.Deletion;
            }
            else
            {
                machine.Deletion = deletion;
            }
        }

        if (ongoing is not null)
        {
            await ongoing.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
            return;
        }

        // Cancel every wait on the machine, then wait for a running job to let go.
        await machine.Lifetime.CancelAsync().ConfigureAwait(false);
        using (await MachineJobs.BeginAsync(machine, JobKind.Destroy, CancellationToken.None).ConfigureAwait(false))
        {
            try
            {
                await machine.Instance.KillAsync(CancellationToken.None).ConfigureAwait(false);
                await machine.Instance.CleanupAsync(CancellationToken.None).ConfigureAwait(false);
            }
            catch (Exception e)
            {
                MachineLog.CleanupFailed(logger, machine.Id, e);
                lock (machine.Sync)
                {
                    // Keep the record (and its port) so nothing is leaked unseen; a later delete retries.
                    transitions.To(machine, MachineState.Failed, $"cleanup failed: {e.Message}");
                    machine.Deletion = null;
                }

                var failure = new BackendOperationException($"machine {machine.Id} could not be cleaned up: {e.Message}", e);
                deletion.TrySetException(failure);
                throw failure;
            }
        }

        table.Remove(machine);
        transitions.Remove(machine);
        RemoveWorkDirectory(machine.WorkDirectory);
        machine.Reservation.Release();
        idempotency.Forget(machine);
        MachineLog.Deleted(logger, machine.Id);
        events.Publish(MachineEventTypes.Destroyed, machine);
        deletion.TrySetResult();
    }

    /// <summary>Destroys each machine; a failure is logged and leaves that machine failed, the others go on.</summary>
    internal async Task DestroyAllAsync(IEnumerable<Machine> machines, CancellationToken cancellationToken) =>
        await Task.WhenAll(machines.Select(async machine =>
        {
            try
            {
                await DestroyAsync(machine, cancellationToken).ConfigureAwait(false);
            }
            catch (FalkException)
            {
                // Logged by DestroyAsync; the machine stays failed with its record, for a later try.
            }
        })).ConfigureAwait(false);

    internal static void RemoveWorkDirectory(string path)
    {
        if (Directory.Exists(path))
        {
            Directory.Delete(path, recursive: true);
        }
    }
}
