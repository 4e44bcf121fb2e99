using Falk.Core.State;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Machines;

/// <summary>
/// The only writer of a machine's <see cref="Machine.State"/> and <see cref="Machine.LastError"/>: each change is saved
/// (the whole record), logged and published, in that order, under the machine's lock, so the record, the log and the
/// event stream always tell the same story in the same order.
/// </summary>
public sealed class MachineTransitions(MachineStore store, MachineEvents events, TimeProvider time, ILogger<MachineService> logger)
{
    /// <summary>Moves to <paramref name="state"/>, keeping the last error.</summary>
    internal void To(Machine machine, MachineState state)
    {
        lock (machine.Sync)
        {
            To(machine, state, machine.LastError);
        }
    }

    /// <summary>Moves to <paramref name="state"/> with <paramref name="lastError"/> (null clears it).</summary>
    internal void To(Machine machine, MachineState state, string? lastError)
    {
        lock (machine.Sync)
        {
            machine.SetState(state, lastError, time.GetUtcNow());
            Save(machine);
            MachineLog.StateChanged(logger, machine.Id, state.ToWire());
            events.Publish(state.ToWire(), machine, state, state == MachineState.Failed ? lastError : null);
        }
    }

    /// <summary>
    /// Moves to <paramref name="state"/> as <see cref="To(Machine, MachineState, string?)"/> does, for a change that a
    /// request asks for: when the record cannot be saved (a full disk), the machine stays as it was and the request fails.
    /// </summary>
    internal void ToOrUndo(Machine machine, MachineState state, string? lastError)
    {
        lock (machine.Sync)
        {
            var (before, errorBefore, changedBefore) = (machine.State, machine.LastError, machine.StateChangedAt);
            machine.SetState(state, lastError, time.GetUtcNow());
            try
            {
                Save(machine);
            }
            catch
            {
                machine.SetState(before, errorBefore, changedBefore);
                throw;
            }

            MachineLog.StateChanged(logger, machine.Id, state.ToWire());
            events.Publish(state.ToWire(), machine, state, state == MachineState.Failed ? lastError : null);
        }
    }

    /// <summary>Moves to <paramref name="state"/> only from <paramref name="from"/> and while no delete runs. Returns whether it did.</summary>
    internal bool TryTo(Machine machine, Func<MachineState, bool> from, MachineState state, string? lastError)
    {
        lock (machine.Sync)
        {
            if (machine.Deletion is not null || !from(machine.State))
            {
                return false;
            }

            To(machine, state, lastError);
            return true;
        }
    }

    /// <summary>A machine taken back after a restart: its state as found, saved, and no event (nothing happened to it).</summary>
    internal void Restore(Machine machine, MachineState state, string? lastError)
    {
        lock (machine.Sync)
        {
            machine.SetState(state, lastError, time.GetUtcNow());
            Save(machine);
        }
    }

    /// <summary>Saves what changed besides the state (handle, lease, host key).</summary>
    internal void Save(Machine machine)
    {
        lock (machine.Sync)
        {
            if (!machine.Removed)
            {
                store.Save(machine.ToRecord());
            }
        }
    }

    /// <summary>The machine is gone: its record is deleted, and no late save brings it back.</summary>
    internal void Remove(Machine machine)
    {
        lock (machine.Sync)
        {
            machine.Removed = true;
            store.Delete(machine.Id);
        }
    }

    /// <summary>Follows a guest paused and resumed from outside Falk, for backends that report it: running ⇄ paused.</summary>
    internal void FollowPauses(Machine machine)
    {
        if (machine.Instance is not IPauseReporting pauses)
        {
            return;
        }

        pauses.PausedChanged += (_, paused) => Paused(machine, paused);
        if (pauses.IsPaused)
        {
            Paused(machine, paused: true);
        }
    }

    private void Paused(Machine machine, bool paused) =>
        TryTo(machine, s => s == (paused ? MachineState.Running : MachineState.Paused), paused ? MachineState.Paused : MachineState.Running, machine.LastError);

    /// <summary>Turns the launched machine's end into a transition once it happens.</summary>
    internal void Watch(Machine machine, Task<MachineExit> exited) => _ = WatchAsync(machine, exited);

    private async Task WatchAsync(Machine machine, Task<MachineExit> exited)
    {
        try
        {
            await exited.ConfigureAwait(false);
            Exited(machine, exited);
        }
        catch (Exception e)
        {
            // Nobody awaits this task: a backend whose exit watch broke, or a state that could not be saved, is logged
            // and leaves the machine failed rather than silently running on as "running".
            MachineLog.ExitWatchFailed(logger, machine.Id, e);
            try
            {
                TryTo(machine, s => s is MachineState.Running or MachineState.Paused or MachineState.Booting, MachineState.Failed, $"watching for its end failed: {e.Message}");
            }
            catch (Exception saveFailure)
            {
                MachineLog.ExitWatchFailed(logger, machine.Id, saveFailure);
            }
        }
    }

    /// <summary>The machine ended: a clean end while running is "stopped", anything else while running or booting "failed".</summary>
    internal void Exited(Machine machine, Task<MachineExit> exited)
    {
        var exit = exited.Result;
        lock (machine.Sync)
        {
            // An exit of an earlier launch, or of a machine being deleted, changes nothing.
            if (machine.Deletion is not null || !ReferenceEquals(machine.Instance.Exited, exited))
            {
                return;
            }

            switch (machine.State)
            {
                case MachineState.Running or MachineState.Paused when exit.ExitCode == 0:
                    To(machine, MachineState.Stopped);
                    break;
                case MachineState.Running or MachineState.Paused or MachineState.Booting:
                    To(machine, MachineState.Failed,
                        $"{exit.Description}{(string.IsNullOrWhiteSpace(exit.OutputTail) ? string.Empty : "; output: " + exit.OutputTail)}");
                    break;
                default:
                    return;
            }
        }

        MachineLog.Exited(logger, machine.Id, exit.Description);
    }
}
