using Falk.Core.State;
using Microsoft.Extensions.DependencyInjection;

namespace Falk.Core.Machines;

public static class MachineServiceCollectionExtensions
{
    /// <summary>
    /// The machine service and its parts, and the hosted services that recover machines at start (applying
    /// <c>on_shutdown</c> at stop), reap expired leases and keep the warm pools full. Needs the config, the backends, ports, SSH readiness and a
    /// <see cref="TimeProvider"/>.
    /// </summary>
    public static IServiceCollection AddFalkMachines(this IServiceCollection services)
    {
        services.AddSingleton<MachineEvents>();
        services.AddSingleton<MachineStore>();
        services.AddSingleton<MachineTable>();
        services.AddSingleton<Admission>();
        services.AddSingleton<MachineTransitions>();
        services.AddSingleton<MachineJobs>();
        services.AddSingleton<IdempotentCreates>();
        services.AddSingleton<MachineDestruction>();
        services.AddSingleton<MachineImages>();
        services.AddSingleton<MachineLeases>();
        services.AddSingleton<DaemonFaults>();
        services.AddSingleton<WarmPools>();
        services.AddSingleton<MachineService>();
        services.AddSingleton<MachineRecovery>();
        services.AddHostedService(sp => sp.GetRequiredService<MachineRecovery>());
        services.AddHostedService<LeaseReaper>();

        // After recovery, which takes back the pooled machines it checks; stopped before it, so no fill outlives the daemon.
        services.AddHostedService<WarmPoolFiller>();
        return services;
    }
}
