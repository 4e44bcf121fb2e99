using Falk.Core.Backends;
using Falk.Core.Config;
using Falk.Core.Machines;
using Falk.Core.Processes;
using Falk.Core.Ssh;
using Microsoft.Extensions.DependencyInjection;

namespace Falk.Core;

public static class FalkServiceCollectionExtensions
{
    /// <summary>The machine service, its backends and what they share, for a loaded config.</summary>
    public static IServiceCollection AddFalkCore(this IServiceCollection services, FalkConfig config)
    {
        services.AddSingleton(config);
        services.AddSingleton(TimeProvider.System);
        services.AddSingleton<IProcessRunner, ProcessRunner>();
        services.AddSingleton<ISshProbe, SshNetProbe>();
        services.AddSingleton<SshReadiness>();
        services.AddSingleton(new PortAllocator(config.Daemon.VmPorts));
        services.AddFalkMachines();
        foreach (var module in BackendModules.All)
        {
            module.AddServices(services, config);
        }

        return services;
    }
}
