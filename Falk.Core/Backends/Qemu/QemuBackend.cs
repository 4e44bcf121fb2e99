using System.Collections.Concurrent;
using System.Text.Json;
using Falk.Core.Config;
using Falk.Core.Machines;
using Falk.Core.Processes;
using Falk.Core.Ssh;
using Falk.Core.Unix;
using Falk.Core.Waiting;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Backends.Qemu;

/// <summary>
/// QEMU machines: a qcow2 overlay of the template's current image version per machine, QEMU as a process of its own
/// controlled over QMP, the serial console in a file. At daemon start it removes what interrupted commits left.
/// QEMU carries the machine's <see cref="ProcessMarks"/> in its environment (and <c>-name falk-ID</c>), so a
/// QEMU left by an earlier run of this daemon can be told apart from any other; after a restart, a QEMU recorded in a
/// machine's handle (pid and start time) that still answers on its QMP socket is taken back.
/// </summary>
public sealed class QemuBackend(FalkConfig config, IProcessRunner runner, PortAllocator ports, SshReadiness ssh, ILogger<QemuBackend> logger)
    : IMachineBackend, IHostedService, IDisposable
{
    private readonly ConcurrentDictionary<string, QemuImageVersions> _versions = new(StringComparer.Ordinal);
    private readonly QemuImg _qemuImg = new(runner);
    private readonly QemuConfinement _confinement = ConfinementOf(config);
    private readonly QemuResumeStates _resumes = new(config, new QemuImg(runner), runner, ports, ssh, ConfinementOf(config), logger);

    public string Type => QemuTemplateOptions.Descriptor.Type;

    /// <summary>Templates on one base_image share its versions, and so the one management machine.</summary>
    public string ManagementScope(TemplateDefinition definition) => Path.GetFullPath(((QemuTemplateOptions)definition.BackendOptions).BaseImage);

    public async Task<IMachineInstance> PrepareAsync(MachineSpec spec, CancellationToken cancellationToken)
    {
        var options = (QemuTemplateOptions)spec.Template.BackendOptions;
        var versions = Versions(options.BaseImage);
        var overlay = OverlayOf(spec.MachineId, spec.WorkDirectory, options);

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
        return NewMachine(spec, options, overlay, backing, versions);
    }

    public async Task<ReattachedMachine?> ReattachAsync(MachineSpec spec, string? handle, MachineState? recordedState, CancellationToken cancellationToken)
    {
        var options = (QemuTemplateOptions)spec.Template.BackendOptions;
        var recorded = ReadHandle(handle);
        var overlay = recorded?.Overlay ?? OverlayOf(spec.MachineId, spec.WorkDirectory, options);
        if (recordedState is not null && recorded?.Backing is { } backing)
        {
            var versions = Versions(options.BaseImage);
            var machine = NewMachine(spec, options, overlay, backing, versions);
            if (recorded.Launch is { } launch && await machine.AdoptAsync(launch, cancellationToken).ConfigureAwait(false))
            {
                await KillStraysAsync(spec, except: launch.ProcessGroup, cancellationToken).ConfigureAwait(false);
                TakeBack(machine, versions, backing, recorded.Layer, launched: true);
                return new ReattachedMachine(machine, Running: true);
            }

            await KillLaunchAsync(spec, recorded.Launch, cancellationToken).ConfigureAwait(false);
            if (recordedState is MachineState.Prepared or MachineState.Stopped or MachineState.Failed && File.Exists(overlay))
            {
                TakeBack(machine, versions, backing, recorded.Layer, launched: recordedState != MachineState.Prepared);
                return new ReattachedMachine(machine, Running: false);
            }
        }

        // Died during prepare, or QEMU ended while the daemon was away: undo what is left. No version was counted as
        // used for it, so none is released here; versions nobody uses any more go once every machine is taken back.
        await KillLaunchAsync(spec, recorded?.Launch, cancellationToken).ConfigureAwait(false);
        var paths = new QemuMachinePaths(spec.WorkDirectory, spec.ConsoleLogPath);
        if (File.Exists(overlay))
        {
            File.Delete(overlay);
        }

        if (Directory.Exists(paths.QemuDirectory))
        {
            Directory.Delete(paths.QemuDirectory, recursive: true);
        }

        return null;
    }

    public async Task RemoveOrphansAsync(IReadOnlySet<string> knownMachineIds, CancellationToken cancellationToken)
    {
        IReadOnlyList<MarkedProcess> Orphans() =>
            ProcessMarks.OfInstance(config.Daemon.InstanceId)
                .Where(m => !knownMachineIds.Contains(m.MachineId) && !_resumes.IsSaving(m.MachineId) && IsQemuOf(m.Process.Pid, m.MachineId))
                .ToList();

        foreach (var orphan in Orphans())
        {
            QemuLog.OrphanKilled(logger, orphan.MachineId, orphan.Process.Pid);
        }

        await KillUntilGoneAsync(() => Orphans().Select(m => m.Process).ToList(), "QEMU processes of unknown machines to end", cancellationToken).ConfigureAwait(false);

        // An overlay under an overlay_image prefix is this daemon's if the machine's work folder is in its state folder:
        // the folder is made before the overlay and removed only after it. Other daemons' overlays are left alone.
        var machinesFolder = Path.Combine(config.Daemon.StateDirectory, "machines");
        var unknownIds = Directory.Exists(machinesFolder)
            ? Directory.EnumerateDirectories(machinesFolder).Select(Path.GetFileName).OfType<string>().Where(id => !knownMachineIds.Contains(id)).ToList()
            : [];
        var qemuTemplates = config.Templates.Where(t => t.Type == Type).Select(t => (QemuTemplateOptions)t.BackendOptions).ToList();
        foreach (var id in unknownIds)
        {
            foreach (var prefix in qemuTemplates.Select(o => o.OverlayPrefix).OfType<string>().Distinct(StringComparer.Ordinal))
            {
                var overlay = OverlayOf(id, Path.Combine(machinesFolder, id), prefix);
                if (File.Exists(overlay))
                {
                    File.Delete(overlay);
                    QemuLog.OrphanOverlayRemoved(logger, id, overlay);
                }
            }
        }

        // Every machine is taken back now, with the versions it uses counted: the rest can go.
        foreach (var baseImage in qemuTemplates.Select(o => o.BaseImage).Distinct(StringComparer.Ordinal))
        {
            cancellationToken.ThrowIfCancellationRequested();
            Versions(baseImage).RemoveUnusedVersions();
        }
    }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        var templates = config.Templates.Where(t => t.Type == Type).ToList();
        foreach (var template in templates)
        {
            var versions = Versions(((QemuTemplateOptions)template.BackendOptions).BaseImage);
            versions.RemovePartials();
            versions.Share();
        }

        if (templates.Count > 0)
        {
            _confinement.OpenStateFolder(Path.Combine(config.Daemon.StateDirectory, "machines"));
        }

        if (templates.Count > 0 && _confinement.Account is null)
        {
            var options = config.Daemon.BackendOptions.GetValueOrDefault(Type) as QemuDaemonOptions ?? QemuDaemonOptions.OwnUser;
            QemuLog.RunsAsDaemonUser(logger, UnixAccounts.EffectiveUid, options.UserName);
        }

        // What guests being saved left when the daemon ended (their QEMUs went in the orphan sweep): nothing to keep.
        if (Directory.Exists(_resumes.WorkFolder))
        {
            Directory.Delete(_resumes.WorkFolder, recursive: true);
        }

        // Every boot = resume template gets its saved guest now, not at its first machine's launch.
        foreach (var template in ResumeTemplates())
        {
            _resumes.SaveCurrent(Versions(((QemuTemplateOptions)template.BackendOptions).BaseImage), template);
        }

        return Task.CompletedTask;
    }

    /// <summary>Ends the saves in progress (their QEMUs, partial files and ports go with them).</summary>
    public async Task StopAsync(CancellationToken cancellationToken) => await _resumes.DisposeAsync().ConfigureAwait(false);

    public void Dispose()
    {
        foreach (var versions in _versions.Values)
        {
            versions.Dispose();
        }
    }

    private QemuImageVersions Versions(string baseImage) =>
        _versions.GetOrAdd(baseImage, b =>
        {
            var versions = new QemuImageVersions(b, _qemuImg, logger, _confinement);

            // A commit makes a new version: the templates on it that resume get its saved guest right away.
            versions.Committed += (_, _) =>
            {
                foreach (var template in ResumeTemplates().Where(t => ((QemuTemplateOptions)t.BackendOptions).BaseImage == b))
                {
                    _resumes.SaveCurrent(versions, template);
                }
            };
            return versions;
        });

    /// <summary>The <c>boot = resume</c> templates, one per base image and command (templates that share both share the saved guest).</summary>
    private IEnumerable<TemplateDefinition> ResumeTemplates() =>
        config.Templates
            .Where(t => t.BackendOptions is QemuTemplateOptions { Boot: QemuBoot.Resume })
            .DistinctBy(t => (((QemuTemplateOptions)t.BackendOptions).BaseImage, QemuResumeStates.Key((QemuTemplateOptions)t.BackendOptions)));

    private static QemuConfinement ConfinementOf(FalkConfig config) => new(
        (config.Daemon.BackendOptions.GetValueOrDefault(QemuTemplateOptions.Descriptor.Type) as QemuDaemonOptions ?? QemuDaemonOptions.OwnUser).Account,
        config.Daemon.StateDirectory);

    private QemuMachine NewMachine(MachineSpec spec, QemuTemplateOptions options, string overlay, string backing, QemuImageVersions versions) =>
        new(spec, options, overlay, backing, versions, _qemuImg, runner, logger, _confinement, options.Boot == QemuBoot.Resume ? _resumes : null);

    /// <summary>Counts the versions a machine taken back uses: its backing version and the saved guest's layer it was resumed on.</summary>
    private static void TakeBack(QemuMachine machine, QemuImageVersions versions, string backing, string? layer, bool launched)
    {
        versions.Adopt(backing);
        if (layer is not null)
        {
            versions.Adopt(layer);
        }

        machine.TakeBack(launched, layer);
    }

    /// <summary>Where a machine's overlay is: in its work folder, or named by the template's <c>overlay_image</c> prefix and the machine id.</summary>
    private static string OverlayOf(string machineId, string workDirectory, QemuTemplateOptions options) =>
        OverlayOf(machineId, workDirectory, options.OverlayPrefix);

    private static string OverlayOf(string machineId, string workDirectory, string? prefix) =>
        prefix is null ? Path.Combine(workDirectory, "overlay.qcow2") : $"{prefix}-{machineId}.qcow2";

    private static QemuHandle? ReadHandle(string? handle)
    {
        if (handle is null)
        {
            return null;
        }

        try
        {
            return JsonSerializer.Deserialize<QemuHandle>(handle);
        }
        catch (JsonException)
        {
            // Not a QEMU handle (a record from something else): treated as no handle, so the machine is cleaned up.
            return null;
        }
    }

    /// <summary>A QEMU started for the machine: <c>-name falk-ID</c> on its command line as well as the markers in its environment.</summary>
    private static bool IsQemuOf(int pid, string machineId)
    {
        var arguments = ProcessTree.Arguments(pid);
        return arguments.Zip(arguments.Skip(1)).Any(pair => pair is ("-name", var name) && name == "falk-" + machineId);
    }

    /// <summary>Kills every QEMU of this machine and daemon instance but <paramref name="except"/> (one started by a launch the record missed).</summary>
    private async Task KillStraysAsync(MachineSpec spec, int? except, CancellationToken cancellationToken)
    {
        IReadOnlyList<ProcessInfo> Strays() =>
            ProcessMarks.OfMachine(spec.MachineId, spec.InstanceId, launch: null)
                .Where(p => p.Pid != except && IsQemuOf(p.Pid, spec.MachineId))
                .ToList();

        foreach (var stray in Strays())
        {
            QemuLog.StrayKilled(logger, spec.MachineId, stray.Pid);
        }

        await KillUntilGoneAsync(Strays, $"stray QEMU processes of machine {spec.MachineId} to end", cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Kills what is left of a machine whose QEMU was not taken back: processes with its marks, and members of its recorded
    /// launch's group and session, which count only while the recorded pid is not held by another process (a reused pid).
    /// </summary>
    private async Task KillLaunchAsync(MachineSpec spec, SessionMark? launch, CancellationToken cancellationToken)
    {
        IReadOnlyList<ProcessInfo> Left() => ProcessMarks.OfMachine(spec.MachineId, spec.InstanceId, launch);

        foreach (var stray in Left())
        {
            QemuLog.StrayKilled(logger, spec.MachineId, stray.Pid);
        }

        await KillUntilGoneAsync(Left, $"processes of machine {spec.MachineId} to end", cancellationToken).ConfigureAwait(false);
    }

    private static async Task KillUntilGoneAsync(Func<IReadOnlyList<ProcessInfo>> find, string what, CancellationToken cancellationToken)
    {
        try
        {
            await ProcessMarks.KillUntilGoneAsync(find, what, cancellationToken).ConfigureAwait(false);
        }
        catch (WaitTimeoutException)
        {
            // Bounded on purpose: an unkillable process (D state) must not hold up recovery.
        }
    }
}

/// <summary>
/// What a QEMU machine needs to be found again: its QEMU (pid and start time, once launched, and the session and group
/// it leads with the boot they belong to), overlay and backing version.
/// </summary>
/// <param name="Layer">The saved guest's disk layer the overlay sits on, when the machine was resumed.</param>
internal sealed record QemuHandle(int? Pid, long? StartTime, string Overlay, string Backing, string? Layer = null, int? ProcessGroup = null, int? Session = null, string? BootId = null)
{
    /// <summary>The recorded launch: signalled only while provably the same process (<see cref="SessionMark"/>).</summary>
    public SessionMark? Launch => SessionMark.Recorded(Pid, StartTime, ProcessGroup, Session, BootId);
}
