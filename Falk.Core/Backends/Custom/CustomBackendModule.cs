using Falk.Core.Config;
using Falk.Core.Machines;
using Microsoft.Extensions.DependencyInjection;

namespace Falk.Core.Backends.Custom;

public sealed class CustomBackendModule : IBackendModule
{
    public BackendDescriptor Descriptor => CustomTemplateOptions.Descriptor;

    public void AddServices(IServiceCollection services, FalkConfig config) =>
        services.AddSingleton<IMachineBackend, CustomBackend>();
}
