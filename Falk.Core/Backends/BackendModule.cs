using Falk.Core.Config;
using Microsoft.Extensions.DependencyInjection;

namespace Falk.Core.Backends;

/// <summary>A backend as the daemon sees it at start: what its config looks like and which services it adds.</summary>
public interface IBackendModule
{
    BackendDescriptor Descriptor { get; }

    void AddServices(IServiceCollection services, FalkConfig config);
}
