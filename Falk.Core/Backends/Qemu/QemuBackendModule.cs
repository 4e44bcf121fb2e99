using Falk.Core.Config;
using Falk.Core.Machines;
using Microsoft.Extensions.DependencyInjection;

namespace Falk.Core.Backends.Qemu;

public sealed class QemuBackendModule : IBackendModule
{
    public BackendDescriptor Descriptor => QemuTemplateOptions.Descriptor;

    public void AddServices(IServiceCollection services, FalkConfig config)
    {
        services.AddSingleton<QemuBackend>();
        services.AddSingleton<IMachineBackend>(sp => sp.GetRequiredService<QemuBackend>());
        services.AddHostedService(sp => sp.GetRequiredService<QemuBackend>());
    }
}
