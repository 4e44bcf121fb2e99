using Falk.Core.Config;
using Falk.Core.Machines;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Backends.Lxd;

/// <summary>The LXD backend, or the same code for Incus (<paramref name="flavor"/>): its own client, image store and socket.</summary>
public sealed class LxdBackendModule(LxdFlavor flavor) : IBackendModule
{
    public BackendDescriptor Descriptor { get; } = flavor.Descriptor;

    public void AddServices(IServiceCollection services, FalkConfig config)
    {
        var options = config.Daemon.BackendOptions.TryGetValue(flavor.Type, out var parsed) && parsed is LxdDaemonOptions own
            ? own
            : new LxdDaemonOptions(flavor.DefaultSocket);
        services.AddSingleton<IMachineBackend>(sp =>
        {
            var logger = sp.GetRequiredService<ILoggerFactory>().CreateLogger($"{typeof(LxdBackend).FullName}.{flavor.Type}");
            var client = new LxdClient(flavor, options.SocketPath, logger);
            return new LxdBackend(config, client, new LxdImageStore(client, config.Daemon.InstanceId, logger), logger);
        });
    }
}
