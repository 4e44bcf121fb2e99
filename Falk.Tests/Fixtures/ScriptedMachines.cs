using Falk.Core.Config;
using Falk.Core.Machines;
using Falk.Core.Ssh;
using Falk.Core.State;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Falk.Tests.Fixtures;

/// <summary>
/// The machine service as the daemon composes it (<see cref="MachineServiceCollectionExtensions.AddFalkMachines"/>),
/// on a scripted backend and SSH probe and a time the test controls. Disposing it stops the hosted parts as the
/// daemon does at shutdown (<c>on_shutdown</c> applies) and closes the store.
/// </summary>
public sealed class ScriptedMachines : IAsyncDisposable
{
    private readonly ServiceProvider _provider;
    private bool _stopped;

    public ScriptedMachines(FalkConfig config, ScriptedBackend backend, ScriptedProbe probe, TimeProvider time)
    {
        var services = new ServiceCollection();
        services.AddSingleton(config);
        services.AddSingleton(time);
        services.AddSingleton<IMachineBackend>(backend);
        services.AddSingleton<ISshProbe>(probe);
        services.AddSingleton(sp => new SshReadiness(probe, TimeProvider.System));
        services.AddSingleton(new PortAllocator(config.Daemon.VmPorts, _ => true));
        services.AddSingleton(typeof(ILogger<>), typeof(NullLogger<>));
        services.AddSingleton<Microsoft.Extensions.Hosting.IHostApplicationLifetime, Microsoft.Extensions.Hosting.Internal.ApplicationLifetime>();
        services.AddFalkMachines();
        _provider = services.BuildServiceProvider();
    }

    public MachineService Service => _provider.GetRequiredService<MachineService>();

    public MachineStore Store => _provider.GetRequiredService<MachineStore>();

    public MachineLeases Leases => _provider.GetRequiredService<MachineLeases>();

    public MachineRecovery Recovery => _provider.GetRequiredService<MachineRecovery>();

    /// <summary>The lease reaper, not started: a test starts it and moves the clock.</summary>
    public LeaseReaper Reaper => _provider.GetServices<Microsoft.Extensions.Hosting.IHostedService>().OfType<LeaseReaper>().Single();

    /// <summary>The daemon's shutdown: <c>on_shutdown</c> applies. Only the first call does anything.</summary>
    public async Task StopAsync()
    {
        if (!_stopped)
        {
            _stopped = true;
            await Recovery.StopAsync(CancellationToken.None);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        await _provider.DisposeAsync();
    }
}
