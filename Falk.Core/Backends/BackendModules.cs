using Falk.Core.Backends.Custom;
using Falk.Core.Backends.Lxd;
using Falk.Core.Backends.Podman;
using Falk.Core.Backends.Qemu;
using Falk.Core.Config;

namespace Falk.Core.Backends;

/// <summary>Every backend this build has. A new backend is a folder and one line here.</summary>
public static class BackendModules
{
    public static IReadOnlyList<IBackendModule> All { get; } =
    [
        new CustomBackendModule(),
        new PodmanBackendModule(),
        new QemuBackendModule(),
        new LxdBackendModule(LxdFlavor.Lxd), new LxdBackendModule(LxdFlavor.Incus),
    ];

    public static IReadOnlyList<BackendDescriptor> Descriptors { get; } = All.Select(m => m.Descriptor).ToList();
}
