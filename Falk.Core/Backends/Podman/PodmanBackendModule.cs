using Falk.Core.Backends.Podman.Engine;
using Falk.Core.Config;
using Falk.Core.Machines;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Backends.Podman;

public sealed class PodmanBackendModule : IBackendModule
{
    public BackendDescriptor Descriptor => PodmanTemplateOptions.Descriptor;

    public void AddServices(IServiceCollection services, FalkConfig config)
    {
        var options = config.Daemon.BackendOptions.TryGetValue(Descriptor.Type, out var parsed) && parsed is PodmanDaemonOptions own
            ? own
            : PodmanDaemonOptions.Default;
        services.AddSingleton(sp => new PodmanEngine(options.Socket, sp.GetRequiredService<ILogger<PodmanEngine>>()));
        services.AddSingleton<IPodmanContainers, PodmanContainers>();
        services.AddSingleton<IPodmanImages, PodmanImages>();
        services.AddSingleton(new PodmanNaming(config.Daemon.InstanceId));
        services.AddSingleton<PodmanImageStore>();
        services.AddSingleton<PodmanExitWatch>();
        services.AddSingleton<IMachineBackend, PodmanBackend>();
    }
}
