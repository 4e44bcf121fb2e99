using System.Collections.Concurrent;
using Falk.Core.Config;
using Falk.Core.Machines;
using Falk.Core.Processes;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Backends.Qemu;

/// <summary>
/// QEMU machines: a qcow2 overlay of the template's current image version per machine, QEMU as a process of its own
/// controlled over QMP, the serial console in a file. At daemon start it removes what interrupted commits left.
/// </summary>
public sealed class QemuBackend(FalkConfig config, IProcessRunner runner, ILogger<QemuBackend> logger) : IMachineBackend, IHostedService, IDisposable
{
    private readonly ConcurrentDictionary<string, QemuImageVersions> _versions = new(StringComparer.Ordinal);
    private readonly QemuImg _qemuImg = new(runner);

    public string Type => QemuTemplateOptions.Descriptor.Type;

    public async Task<IMachineInstance> PrepareAsync(MachineSpec spec, CancellationToken cancellationToken)
    {
        var options = (QemuTemplateOptions)spec.Template.BackendOptions;
        var versions = Versions(options.BaseImage);
        var overlay = options.OverlayPrefix is null
            ? Path.Combine(spec.WorkDirectory, "overlay.qcow2")
            : $"{options.OverlayPrefix}-{spec.MachineId}.qcow2";

        // The name is claimed with O_EXCL before qemu-img writes to it: no check-then-create race with anyone.
        try
        {
            new FileStream(overlay, FileMode.CreateNew, FileAccess.Write, FileShare.None).Dispose();
        }
        catch (IOException e)
        {
            throw new BackendOperationException($"cannot create the overlay {overlay} of machine {spec.MachineId}: {e.Message}", e);
        }

        var backing = versions.Acquire();
        try
        {
            if (!File.Exists(backing))
            {
                throw new BackendOperationException($"the image {backing} of template '{spec.Template.Name}' does not exist");
            }

            await _qemuImg.CreateOverlayAsync(overlay, backing, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            File.Delete(overlay);
            versions.Release(backing);
            throw;
        }

        QemuLog.OverlayCreated(logger, spec.MachineId, overlay, backing);
        return new QemuMachine(spec, options, overlay, backing, versions, _qemuImg, runner, logger);
    }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        foreach (var template in config.Templates.Where(t => t.Type == Type))
        {
            Versions(((QemuTemplateOptions)template.BackendOptions).BaseImage).RemovePartials();
        }

        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public void Dispose()
    {
        foreach (var versions in _versions.Values)
        {
            versions.Dispose();
        }
    }

    private QemuImageVersions Versions(string baseImage) =>
        _versions.GetOrAdd(baseImage, b => new QemuImageVersions(b, _qemuImg, logger));
}
