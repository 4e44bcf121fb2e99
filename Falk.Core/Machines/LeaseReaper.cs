using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Machines;

/// <summary>
/// Destroys machines whose lease ran out, once a second, so none outlives its lease by more than a few seconds. A
/// round begins the destroys and does not wait for them: a slow delete (a cleanup command that takes its time)
/// holds up no other machine's expiry, and the next round runs on time.
/// A round that fails is logged and the next one runs; should the loop itself break, the daemon stops with a failure
/// status (<see cref="DaemonFaults"/>) so that its supervisor restarts it, rather than running on with no lease enforced.
/// </summary>
public sealed class LeaseReaper(MachineLeases leases, DaemonFaults faults, TimeProvider time, ILogger<MachineService> logger) : BackgroundService
{
    public static readonly TimeSpan Interval = TimeSpan.FromSeconds(1);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        try
        {
            using var timer = new PeriodicTimer(Interval, time);
            while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false))
            {
                try
                {
                    leases.BeginExpired();
                }
                catch (Exception e) when (!stoppingToken.IsCancellationRequested)
                {
                    MachineLog.ReaperRoundFailed(logger, e);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Stopping.
        }
        catch (Exception e)
        {
            faults.Unrecoverable("the lease reaper", e);
        }
    }
}
