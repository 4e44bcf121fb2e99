using Microsoft.Extensions.Hosting;

namespace Falk.Core.Machines;

/// <summary>Destroys machines whose lease ran out, once a second, so none outlives its lease by more than a few seconds.</summary>
public sealed class LeaseReaper(MachineLeases leases, TimeProvider time) : BackgroundService
{
    public static readonly TimeSpan Interval = TimeSpan.FromSeconds(1);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(Interval, time);
        while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false))
        {
            await leases.DestroyExpiredAsync(stoppingToken).ConfigureAwait(false);
        }
    }
}
