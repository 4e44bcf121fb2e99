using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Machines;

/// <summary>
/// Keeps the <see cref="WarmPools"/> full: makes, boots and SSH-verifies machines for pools that are short, destroys
/// pooled machines that died, were made stale by a commit or were deleted, and replaces them. At start (after
/// <see cref="MachineRecovery"/>) it checks the pooled machines taken back: running, verified and recorded as confirmed
/// ones rejoin their pool, the others are destroyed. Every fill goes through the same prepare and boot as a client's
/// machine, so it is recorded, counted and cleaned up like one; at stop, fills under way are cut short and their
/// machines left to <c>on_shutdown</c>.
/// </summary>
public sealed class WarmPoolFiller(WarmPools pools, MachineService service, MachineTable table, MachineDestruction destruction,
    MachineEvents events, DaemonFaults faults, TimeProvider time, ILogger<MachineService> logger) : BackgroundService
{
    private static readonly HashSet<string> EndOfLife = new(StringComparer.Ordinal)
    {
        MachineEventTypes.Failed, MachineEventTypes.Stopped, MachineEventTypes.Stopping, MachineEventTypes.Destroyed, MachineEventTypes.LeaseExpired,
    };

    private readonly List<Task> _work = [];

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        // Pooled machines taken back after a restart are dealt with even when no template has a pool any more.
        var takenBack = table.All.Where(m => m.IsPooled).ToList();
        if (!pools.Any && takenBack.Count == 0)
        {
            return;
        }

        var watch = WatchAsync(stoppingToken);
        try
        {
            foreach (var machine in takenBack)
            {
                _work.Add(CheckTakenBackAsync(machine, stoppingToken));
            }

            while (!stoppingToken.IsCancellationRequested)
            {
                var changed = pools.Changed;
                pools.DiscardDead();
                foreach (var machine in pools.TakeDiscarded())
                {
                    _work.Add(DestroyAsync(machine));
                }

                foreach (var template in pools.Templates)
                {
                    while (pools.TryReserveFill(template) is { } fill)
                    {
                        _work.Add(FillAsync(fill, stoppingToken));
                    }
                }

                _work.RemoveAll(t => t.IsCompleted);
                var retry = pools.NextRetry() is { } at ? Max(at - time.GetUtcNow(), TimeSpan.FromMilliseconds(10)) : Timeout.InfiniteTimeSpan;
                try
                {
                    await changed.WaitAsync(retry, time, stoppingToken).ConfigureAwait(false);
                }
                catch (TimeoutException)
                {
                    // A pool's back-off is over: look again.
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Stopping.
        }
        catch (Exception e)
        {
            faults.Unrecoverable("the warm pool filler", e);
        }
        finally
        {
            // Fills under way see the stop and end; what they made is left to on_shutdown, like any machine.
            await Task.WhenAll(_work.Append(watch)).ConfigureAwait(false);
        }
    }

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;

    /// <summary>A pooled machine stopped, failed or went (it is replaced), or any machine went (its room may let a pool fill).</summary>
    private static bool Concerns(MachineEvent e) =>
        e.Type == MachineEventTypes.Destroyed || (e.OwnerUid == Caller.Daemon.Uid && EndOfLife.Contains(e.Type));

    /// <summary>Wakes the loop when a pooled machine stops, fails or goes, so that it is replaced at once, and when room is freed.</summary>
    private async Task WatchAsync(CancellationToken stoppingToken)
    {
        try
        {
            await foreach (var _ in events.SubscribeAsync(null, Concerns, stoppingToken).ConfigureAwait(false))
            {
                pools.Signal();
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Stopping.
        }
    }

    private async Task FillAsync(PoolFill fill, CancellationToken stoppingToken)
    {
        Machine? machine = null;
        var ended = false;
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
            timeout.CancelAfter(WarmPools.FillTimeout);

            // Until it is verified the machine holds a lease of its own: a fill that hangs, or that a crash cut short, is
            // reaped like any machine.
            machine = await service.PrepareAsync(fill.Reservation, fill.MachineId, manage: false, Caller.Daemon.Uid,
                new Dictionary<string, string>(), time.GetUtcNow() + WarmPools.FillTimeout + TimeSpan.FromMinutes(1), null, timeout.Token).ConfigureAwait(false);
            await service.BootAsync(machine.Id, Caller.Daemon, waitForSsh: true, WarmPools.FillTimeout, timeout.Token).ConfigureAwait(false);
            ended = true;
            if (!pools.Confirm(machine, fill.Generation))
            {
                await DestroyAsync(machine).ConfigureAwait(false);
            }
        }
        catch (Exception) when (stoppingToken.IsCancellationRequested)
        {
            if (!ended)
            {
                pools.FillEnded(fill.Template, failed: false);
            }
        }
        catch (Exception e)
        {
            // A machine evicted for a client's create, or deleted by an admin, is no failure of the template.
            var takenAway = machine is not null && (machine.IsBeingDeleted || !table.Contains(machine.Id));
            if (!takenAway)
            {
                WarmPoolLog.FillFailed(logger, fill.Template.Id, machine?.Id, e);
            }

            if (!ended)
            {
                pools.FillEnded(fill.Template, failed: !takenAway);
            }

            if (machine is not null)
            {
                await DestroyAsync(machine).ConfigureAwait(false);
            }
        }
    }

    /// <summary>A pooled machine found after a restart rejoins its pool only if it was confirmed, runs and answers SSH with its key now.</summary>
    private async Task CheckTakenBackAsync(Machine machine, CancellationToken stoppingToken)
    {
        var view = machine.View();
        var reason = !pools.HasPool(machine.Template) ? "its template has no warm pool now"
            : view.LeaseExpiresAt != WarmPools.ConfirmedLease ? "it was never confirmed, or a commit made it stale"
            : view.State != MachineState.Running ? $"it is {view.State.ToWire()}"
            : null;
        if (reason is null)
        {
            var generation = pools.BeginCheck(machine.Template);
            try
            {
                await service.VerifyAsync(machine, TimeSpan.FromSeconds(30), stoppingToken).ConfigureAwait(false);
                if (pools.Confirm(machine, generation))
                {
                    return;
                }

                reason = "its pool is full or its image changed";
            }
            catch (Exception e) when (!stoppingToken.IsCancellationRequested)
            {
                pools.FillEnded(machine.Template, failed: false);
                reason = $"its SSH check failed: {e.Message}";
            }
            catch (Exception) when (stoppingToken.IsCancellationRequested)
            {
                pools.FillEnded(machine.Template, failed: false);
                return;
            }
        }

        WarmPoolLog.NotKept(logger, machine.Id, machine.Template.Id, reason);
        await DestroyAsync(machine).ConfigureAwait(false);
    }

    private async Task DestroyAsync(Machine machine)
    {
        try
        {
            // Not cut short by a stop: a machine half destroyed helps nobody.
            await destruction.DestroyAsync(machine, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // The machine stays failed with its record, for a delete or the next start to retry.
            WarmPoolLog.DestroyFailed(logger, machine.Id, e);
        }
    }
}
