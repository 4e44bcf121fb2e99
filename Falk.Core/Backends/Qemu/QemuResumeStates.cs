using System.Collections.Concurrent;
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using Falk.Core.Config;
using Falk.Core.Machines;
using Falk.Core.Processes;
using Falk.Core.Ssh;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Backends.Qemu;

/// <summary>
/// The saved running guests of <c>boot = resume</c> templates, one per image version and QEMU command. To make one,
/// Falk boots the version on a new layer (an overlay of the version), waits until SSH presents the pinned host key,
/// stops the guest and saves its memory and devices; the layer is never written again. A machine then starts from its
/// own fresh overlay on that layer plus the saved guest: its disk is exactly the one the saved memory expects.
/// One save per version and command runs at a time; every launch that needs it waits for that one.
/// </summary>
internal sealed class QemuResumeStates(FalkConfig config, QemuImg qemuImg, IProcessRunner runner, PortAllocator ports, SshReadiness ssh, QemuConfinement confinement, ILogger logger)
    : IAsyncDisposable
{
    public const string SaverPrefix = "resume-";

    /// <summary>How long the guest that is saved may take to boot to SSH (TCG is slow; a full distribution more so).</summary>
    private static readonly TimeSpan BootTimeout = TimeSpan.FromMinutes(3);

    /// <summary>
    /// How long launches boot cold at once after a save of their version and command failed, instead of each waiting
    /// for a save of its own that would likely fail the same way (a guest that never answers SSH, a wrong host key).
    /// </summary>
    private static readonly TimeSpan RetryAfterFailure = TimeSpan.FromMinutes(10);

    private readonly ConcurrentDictionary<string, Lazy<Task>> _saving = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, byte> _savers = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, (long At, string Reason)> _failures = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _stopping = new();

    /// <summary>Where the guests being saved keep their sockets and console: <c>state_dir/resume</c>.</summary>
    public string WorkFolder => Path.Combine(config.Daemon.StateDirectory, "resume");

    /// <summary>Identifies what a saved guest depends on besides the image: the template's QEMU command (machine, memory, devices).</summary>
    public static string Key(QemuTemplateOptions options) =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(string.Join('\0', options.Command))))[..16];

    /// <summary>Whether <paramref name="machineId"/> is a QEMU this daemon runs now to save a guest (not an orphan).</summary>
    public bool IsSaving(string machineId) => _savers.ContainsKey(machineId);

    /// <summary>
    /// The saved guest of <paramref name="version"/> for <paramref name="template"/>, its layer counted as used until the
    /// caller releases it; saved first when there is none (or joined, while another launch saves it).
    /// </summary>
    public async Task<QemuResumeState> AcquireAsync(QemuImageVersions versions, string version, TemplateDefinition template, CancellationToken cancellationToken)
    {
        var key = Key((QemuTemplateOptions)template.BackendOptions);
        if (versions.AcquireResumeState(version, key) is { } ready)
        {
            return ready;
        }

        await SaveAsync(versions, version, template).WaitAsync(cancellationToken).ConfigureAwait(false);
        return versions.AcquireResumeState(version, key)
            ?? throw new BackendOperationException($"the saved guest of {version} went before it could be used");
    }

    /// <summary>Saves a guest of the version in force now, in the background (at start, after a commit). Failures are logged.</summary>
    public void SaveCurrent(QemuImageVersions versions, TemplateDefinition template)
    {
        var version = versions.Acquire();
        _ = SaveAndReleaseAsync();

        async Task SaveAndReleaseAsync()
        {
            try
            {
                await SaveAsync(versions, version, template).ConfigureAwait(false);
            }
            catch (Exception e) when (e is BackendOperationException or OperationCanceledException)
            {
                // Logged where it failed; a launch tries again.
            }
            finally
            {
                versions.Release(version);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync().ConfigureAwait(false);
        foreach (var save in _saving.Values.Where(s => s.IsValueCreated).Select(s => s.Value))
        {
            try
            {
                await save.WaitAsync(TimeSpan.FromSeconds(30)).ConfigureAwait(false);
            }
            catch (Exception e) when (e is BackendOperationException or OperationCanceledException or TimeoutException)
            {
                // Ended by the cancellation, as meant.
            }
        }

        // The token source is not disposed: a launch that comes late still reads its (cancelled) token.
    }

    /// <summary>The save of this version and command: the one in progress, or a new one.</summary>
    private Task SaveAsync(QemuImageVersions versions, string version, TemplateDefinition template)
    {
        var id = version + "\0" + Key((QemuTemplateOptions)template.BackendOptions);
        if (_failures.TryGetValue(id, out var failure) && Stopwatch.GetElapsedTime(failure.At) < RetryAfterFailure)
        {
            return Task.FromException(new BackendOperationException(
                $"saving a running guest of {version} failed {Stopwatch.GetElapsedTime(failure.At).TotalSeconds:0} s ago ({failure.Reason}); tried again {RetryAfterFailure.TotalMinutes:0} min after"));
        }

        var save = _saving.GetOrAdd(id, _ => new Lazy<Task>(() => SaveOnceAsync(versions, version, template)));
        _ = save.Value.ContinueWith(
            done =>
            {
                if (done.Exception?.InnerException is BackendOperationException e)
                {
                    _failures[id] = (Stopwatch.GetTimestamp(), e.Message);
                }
                else if (done.IsCompletedSuccessfully)
                {
                    _failures.TryRemove(id, out _);
                }

                _saving.TryRemove(new KeyValuePair<string, Lazy<Task>>(id, save));
            },
            CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Default);
        return save.Value;
    }

    private async Task SaveOnceAsync(QemuImageVersions versions, string version, TemplateDefinition template)
    {
        var options = (QemuTemplateOptions)template.BackendOptions;
        var key = Key(options);
        if (versions.AcquireResumeState(version, key) is { } saved)
        {
            // Saved by the save that ended just before this one was asked for.
            versions.Release(saved.Layer);
            return;
        }

        var cancellationToken = _stopping.Token;
        var started = Stopwatch.GetTimestamp();
        var stem = versions.NewResumeStem(version, key);
        var state = new QemuResumeState(version, stem + ".qcow2", stem + ".vmstate");
        var layerPartial = state.Layer + QemuImageVersions.PartialSuffix;
        var statePartial = state.State + QemuImageVersions.PartialSuffix;
        var saverId = SaverPrefix + Path.GetFileName(stem)[^8..];
        var work = Path.Combine(WorkFolder, saverId);
        var port = ports.TryAllocate();
        QemuMachine? saver = null;
        _savers[saverId] = 0;
        versions.Adopt(version);
        try
        {
            if (port is null)
            {
                throw new BackendOperationException($"no free port in vm_ports {ports.Range} for the guest to save");
            }

            Directory.CreateDirectory(work);
            await qemuImg.CreateOverlayAsync(layerPartial, version, cancellationToken).ConfigureAwait(false);
            var spec = new MachineSpec(saverId, template, Manage: false, port.Value, OwnerUid: 0, new Dictionary<string, string>(), work, config.Daemon.InstanceId);
            saver = new QemuMachine(spec, options with { Boot = QemuBoot.Cold }, layerPartial, version, versions, qemuImg, runner, logger, confinement);
            QemuLog.ResumeStateSaving(logger, version, saverId, port.Value);
            await saver.LaunchAsync(cancellationToken).ConfigureAwait(false);
            var exited = saver.Exited!;
            await ssh.WaitAsync(
                new SshEndpoint(template.SshHost, port.Value, template.SshUser),
                template.KnownHostKeys,
                BootTimeout,
                exited,
                () =>
                {
                    if (exited.IsCompletedSuccessfully)
                    {
                        throw new BackendOperationException($"QEMU ended before SSH answered: {exited.Result.Description}; {exited.Result.OutputTail}");
                    }
                },
                cancellationToken).ConfigureAwait(false);

            var size = await saver.SaveGuestAsync(statePartial, cancellationToken).ConfigureAwait(false);
            FileSync.File(layerPartial);
            FileSync.File(statePartial);
            versions.PublishResumeState(layerPartial, statePartial, state);
            QemuLog.ResumeStateSaved(logger, version, state.State, size, Stopwatch.GetElapsedTime(started).TotalSeconds);
        }
        catch (Exception e) when (!cancellationToken.IsCancellationRequested && e is not BackendOperationException)
        {
            QemuLog.ResumeStateFailed(logger, version, e.Message);
            throw new BackendOperationException($"saving a running guest of {version} failed: {e.Message}", e);
        }
        catch (BackendOperationException e)
        {
            QemuLog.ResumeStateFailed(logger, version, e.Message);
            throw;
        }
        finally
        {
            if (saver is null)
            {
                versions.Release(version);
            }
            else
            {
                // Releases the version; deletes the layer unless it was published under its final name.
                await saver.KillAsync(CancellationToken.None).ConfigureAwait(false);
                await saver.CleanupAsync(CancellationToken.None).ConfigureAwait(false);
            }

            File.Delete(layerPartial);
            File.Delete(statePartial);
            if (port is not null)
            {
                ports.Release(port.Value);
            }

            if (Directory.Exists(work))
            {
                Directory.Delete(work, recursive: true);
            }

            _savers.TryRemove(saverId, out _);
        }
    }
}
