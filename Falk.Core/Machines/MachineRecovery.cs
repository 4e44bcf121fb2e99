using Microsoft.Extensions.Hosting;

namespace Falk.Core.Machines;

/// <summary>Takes back or cleans up the machines of an earlier run before the daemon accepts requests.</summary>
public sealed class MachineRecovery(MachineService machines) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken) => machines.RecoverAsync(cancellationToken);

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
