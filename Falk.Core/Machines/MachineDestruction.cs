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
        TaskCompletionSource? ongoing;
        var deletion = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (machine.Sync)
        {
            ongoing = machine.Deletion;
            machine.Deletion ??= deletion;
        }

        if (ongoing is not null)
        {
            await ongoing.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
            return;
        }

        await RunAsync(machine, deletion).ConfigureAwait(false);
    }

    /// <summary>
    /// Begins destroying the machine when no destroy runs yet and <paramref name="condition"/> holds, both decided
    /// under the machine's lock, where a lease renewal is decided too: of a renewal and this claim, exactly one wins.
    /// Returns the destroy, running on its own (it never throws: a failure is logged and leaves the machine failed),
    /// or null when the machine was not claimed.
    /// </summary>
    internal Task? TryBegin(Machine machine, Func<Machine, bool> condition)
    {
        var deletion = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (machine.Sync)
        {
            if (machine.Deletion is not null || !condition(machine))
            {
                return null;
            }

            machine.Deletion = deletion;
        }

        return Task.Run(async () =>
        {
            try
            {
                await RunAsync(machine, deletion).ConfigureAwait(false);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // Logged by RunAsync; the machine stays failed with its record, for a later try.
            }
        });
    }

    /// <summary>The destroy itself, once <paramref name="deletion"/> is the machine's.</summary>
    private async Task RunAsync(Machine machine, TaskCompletionSource deletion)
    {
        // Cancel every wait on the machine, then wait for a running job to let go.
        await machine.Lifetime.CancelAsync().ConfigureAwait(false);
        using (await MachineJobs.BeginAsync(machine, JobKind.Destroy, CancellationToken.None).ConfigureAwait(false))
        {
            try
            {
                if (!machine.Instance.CleanupEndsRunningMachine)
                {
                    await machine.Instance.KillAsync(CancellationToken.None).ConfigureAwait(false);
                }

                await machine.Instance.CleanupAsync(CancellationToken.None).ConfigureAwait(false);

                // Its folder goes before its record: a folder that cannot be removed leaves a failed machine that
                // still holds its port and slot, never one that is gone from the table but not from the disk.
                RemoveWorkDirectory(machine.WorkDirectory);
                transitions.Remove(machine);
            }
            catch (Exception e)
            {
                MachineLog.CleanupFailed(logger, machine.Id, e);
                lock (machine.Sync)
                {
                    // Keep the record (and its port) so nothing is leaked unseen; a later delete retries.
                    TryMarkFailed(machine, $"cleanup failed: {e.Message}");
                    machine.Deletion = null;
                }

                var failure = new BackendOperationException($"machine {machine.Id} could not be cleaned up: {e.Message}", e);
                deletion.TrySetException(failure);
                throw failure;
            }
        }

        table.Remove(machine);
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
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // Logged by DestroyAsync; the machine stays failed with its record, for a later try.
            }
        })).ConfigureAwait(false);

    private void TryMarkFailed(Machine machine, string error)
    {
        try
        {
            transitions.To(machine, MachineState.Failed, error);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // The state could not be saved (the database failed too): the machine is failed in memory, and its
            // record on disk still names it, so a restart finds it again.
            MachineLog.CleanupFailed(logger, machine.Id, e);
        }
    }

    internal static void RemoveWorkDirectory(string path)
    {
        if (Directory.Exists(path))
        {
            Directory.Delete(path, recursive: true);
        }
    }
}
