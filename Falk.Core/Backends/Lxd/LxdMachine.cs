using System.Text.Json;
using Falk.Core.Machines;
using Falk.Core.Ssh;
using Falk.Core.Waiting;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Backends.Lxd;

/// <summary>
/// One machine: one LXD instance named after it. Its end is noticed by looking at the instance's status (through the
/// API) every half second while it runs; the watch waits out an unreachable daemon and a snapshot restore.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001", Justification = "The watch token source has no timer; it is cancelled at cleanup and left to the GC, since a console copy may still hold its token.")]
internal sealed class LxdMachine : IMachineInstance, ISnapshotSupport, ICommitSupport
{
    private static readonly TimeSpan WatchInterval = TimeSpan.FromMilliseconds(500);
    private static readonly TimeSpan AddressTimeout = TimeSpan.FromSeconds(60);

    private readonly MachineSpec _spec;
    private readonly LxdClient _client;
    private readonly LxdImageStore _store;
    private readonly ILogger _logger;
    private readonly string _fingerprint;
    private readonly bool _fromCommittedVersion;
    private readonly CancellationTokenSource _watch = new();

    // A restore stops and starts a running instance, a snapshot freezes it; the watch does not count that as the machine's end.
    private volatile bool _restoring;
    private volatile string? _dynamicHost;
    private volatile bool _unreachableLogged;

    // The console, kept in the machine's console log file (LXD hands each part out once): a stopped instance's last
    // part is appended once per run.
    private readonly SemaphoreSlim _consoleGate = new(1, 1);
    private bool _tailTaken;

    // What this launch printed so far; null when not known (an instance taken back).
    private LxdLaunchOutput? _launchOutput;

    public LxdMachine(MachineSpec spec, string fingerprint, bool fromCommittedVersion, IReadOnlyList<HostKey> discoveredHostKeys,
        string? dynamicHost, LxdClient client, LxdImageStore store, ILogger logger)
    {
        _spec = spec;
        _fingerprint = fingerprint;
        _fromCommittedVersion = fromCommittedVersion;
        _dynamicHost = dynamicHost;
        DiscoveredHostKeys = discoveredHostKeys;
        _client = client;
        _store = store;
        _logger = logger;
    }

    private string Name => _spec.MachineId;

    private bool Dynamic => _spec.Template.SshHost == LxdBackend.DynamicHost;

    public IReadOnlyList<HostKey> DiscoveredHostKeys { get; }

    public Task<MachineExit>? Exited { get; private set; }

    /// <summary>With <c>ssh_host = __dynamic__</c>: port 22 of the instance's own address, once it has one.</summary>
    public SshTarget? SshTarget => Dynamic && _dynamicHost is { } host ? new SshTarget(host, 22) : null;

    public string? Handle => JsonSerializer.Serialize(new LxdHandle(_fingerprint, _fromCommittedVersion,
        DiscoveredHostKeys.Select(k => k.PublicKeyLine).ToList(), _dynamicHost));

    /// <summary>After a daemon restart, for an instance that outlived the previous daemon: watched again when it runs.</summary>
    public void TakeBack(bool running)
    {
        if (running)
        {
            Exited = WatchAsync();
        }
    }

    public async Task LaunchAsync(CancellationToken cancellationToken)
    {
        _tailTaken = false;
        await _consoleGate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            _launchOutput = new LxdLaunchOutput();
        }
        finally
        {
            _consoleGate.Release();
        }

        await Api("start", () => _client.ChangeStateAsync(Name, "start", force: false, timeout: null, cancellationToken)).ConfigureAwait(false);
        LxdLog.Started(_logger, Name);
        Exited = WatchAsync();
        if (Dynamic)
        {
            _dynamicHost = await Wait.UntilAsync(async ct =>
            {
                var addresses = await _client.AddressesAsync(Name, ct).ConfigureAwait(false);
                return addresses.Count > 0 ? ProbeOutcome.Done(addresses[0]) : ProbeOutcome.NotYet<string>("the instance has no global address yet");
            }, TimeSpan.FromMilliseconds(200), AddressTimeout, $"an address for machine {Name} (ssh_host = {LxdBackend.DynamicHost})", cancellationToken, Exited).ConfigureAwait(false);
        }
    }

    /// <summary>LXD's graceful stop (SIGPWR to the container's init) for up to <paramref name="grace"/>, then a forced one.</summary>
    public async Task StopAsync(TimeSpan grace, CancellationToken cancellationToken)
    {
        try
        {
            await _client.ChangeStateAsync(Name, "stop", force: false, timeout: grace, cancellationToken).ConfigureAwait(false);
        }
        catch (LxdApiException e) when (e.IsAlreadyStopped)
        {
            return;
        }
        catch (LxdApiException e)
        {
            LxdLog.OperationFailed(_logger, Name, "graceful stop", e.DaemonMessage);
        }

        await KillAsync(cancellationToken).ConfigureAwait(false);
    }

    public Task KillAsync(CancellationToken cancellationToken) => Api("kill", async () =>
    {
        try
        {
            await _client.ChangeStateAsync(Name, "stop", force: true, timeout: null, cancellationToken).ConfigureAwait(false);
        }
        catch (LxdApiException e) when (e.IsAlreadyStopped || e.IsNotFound)
        {
            // Off already.
        }
    });

    /// <summary>Forced stop and deletion of the instance (with its snapshots); then old template versions it may have held.</summary>
    public async Task CleanupAsync(CancellationToken cancellationToken)
    {
        await _watch.CancelAsync().ConfigureAwait(false);
        await KillAsync(cancellationToken).ConfigureAwait(false);
        await Api("delete", async () =>
        {
            try
            {
                await _client.DeleteInstanceAsync(Name, cancellationToken).ConfigureAwait(false);
                LxdLog.Deleted(_logger, Name);
            }
            catch (LxdApiException e) when (e.IsNotFound)
            {
                // Gone already.
            }
        }).ConfigureAwait(false);

        if (!_fromCommittedVersion && !_spec.Manage)
        {
            return;
        }

        try
        {
            await _store.RemoveUnusedVersionsAsync(_spec.Template, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is LxdApiException or FalkException)
        {
            LxdLog.OperationFailed(_logger, Name, "removing old template images", e.Message);
        }
    }

    public string OutputTail()
    {
        try
        {
            return File.Exists(_spec.ConsoleLogPath) ? string.Join('\n', File.ReadLines(_spec.ConsoleLogPath).TakeLast(20)) : string.Empty;
        }
        catch (IOException)
        {
            return string.Empty;
        }
    }

    /// <summary>The console as collected in the machine's console log file; following, until the machine stops.</summary>
    public async Task CopyConsoleAsync(Stream destination, bool follow, CancellationToken cancellationToken)
    {
        var exited = Exited;
        try
        {
            await PullConsoleAsync(stopped: exited is null || exited.IsCompleted, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is BackendUnavailableException or LxdApiException)
        {
            // What was collected before is still served.
        }

        await ConsoleLog.CopyAsync(_spec.ConsoleLogPath, destination, follow, exited, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Appends what the instance wrote to its console since the last read to the console log file.</summary>
    private async Task PullConsoleAsync(bool stopped, CancellationToken cancellationToken)
    {
        await _consoleGate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (stopped && _tailTaken)
            {
                return;
            }

            var part = await _client.ConsoleLogAsync(Name, cancellationToken).ConfigureAwait(false);
            var skip = _launchOutput?.ReplayedIn(part) ?? 0;
            if (skip == 0 && stopped && part.Length > 0 && File.Exists(_spec.ConsoleLogPath))
            {
                // A stopped instance's log may repeat what was already handed out while it ran.
                var file = new FileStream(_spec.ConsoleLogPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
                await using (file.ConfigureAwait(false))
                {
                    var tail = new byte[Math.Min(file.Length, part.Length)];
                    file.Seek(-tail.Length, SeekOrigin.End);
                    await file.ReadExactlyAsync(tail, cancellationToken).ConfigureAwait(false);
                    skip = Overlap(tail, part);
                }
            }

            // LXD keeps at most its ring buffer (lxc.console.size = auto) and hands each part out once; the parts
            // collected here are kept within console_max_bytes, the newest output kept.
            using var log = new ConsoleLogWriter(_spec.ConsoleLogPath, _spec.ConsoleMaxBytes);
            log.Write(part.AsSpan(skip));
            _launchOutput?.Add(part.AsSpan(skip));

            _tailTaken |= stopped;
        }
        finally
        {
            _consoleGate.Release();
        }
    }

    public async Task<SnapshotInfo> CreateSnapshotAsync(string name, CancellationToken cancellationToken)
    {
        _restoring = true;
        try
        {
            // LXD freezes a running container while it copies it.
            await Api("snapshot", () => _client.CreateSnapshotAsync(Name, name, stateful: false, cancellationToken)).ConfigureAwait(false);
        }
        finally
        {
            _restoring = false;
        }

        LxdLog.SnapshotMade(_logger, Name, name, stateful: false);
        var made = (await ListSnapshotsAsync(cancellationToken).ConfigureAwait(false)).FirstOrDefault(s => s.Name == name);
        return made ?? new SnapshotInfo(name, DateTimeOffset.UtcNow, null, IncludesMemory: false);
    }

    public async Task<IReadOnlyList<SnapshotInfo>> ListSnapshotsAsync(CancellationToken cancellationToken)
    {
        var snapshots = await Api("list snapshots", () => _client.SnapshotsAsync(Name, cancellationToken)).ConfigureAwait(false);
        return snapshots
            .Select(s => new SnapshotInfo(s.Name[(s.Name.LastIndexOf('/') + 1)..], s.CreatedAt, s.Size is > 0 ? s.Size : null, s.Stateful))
            .OrderBy(s => s.CreatedAt)
            .ToList();
    }

    /// <summary>LXD's own restore: a running container is stopped, rolled back and started again; the watch waits meanwhile.</summary>
    public async Task RestoreSnapshotAsync(string name, CancellationToken cancellationToken)
    {
        if ((await ListSnapshotsAsync(cancellationToken).ConfigureAwait(false)).All(s => s.Name != name))
        {
            throw new SnapshotNotFoundException(Name, name);
        }

        _restoring = true;
        try
        {
            await Api("restore snapshot", () => _client.RestoreSnapshotAsync(Name, name, cancellationToken)).ConfigureAwait(false);
            LxdLog.SnapshotRestored(_logger, Name, name);
        }
        finally
        {
            _restoring = false;
        }
    }

    public async Task DeleteSnapshotAsync(string name, CancellationToken cancellationToken)
    {
        if ((await ListSnapshotsAsync(cancellationToken).ConfigureAwait(false)).All(s => s.Name != name))
        {
            throw new SnapshotNotFoundException(Name, name);
        }

        await Api("delete snapshot", () => _client.DeleteSnapshotAsync(Name, name, cancellationToken)).ConfigureAwait(false);
    }

    public Task<CommitResult> CommitAsync(CancellationToken cancellationToken) =>
        Api("commit", () => _store.PublishAsync(Name, Name, _spec.Template, cancellationToken));

    /// <summary>Completes when the instance stops (by itself, by a stop or kill) or is deleted outside Falk.</summary>
    private async Task<MachineExit> WatchAsync()
    {
        var token = _watch.Token;
        try
        {
            var (code, description) = await Wait.UntilAsync(async ct =>
            {
                LxdInstance? instance;
                try
                {
                    instance = await _client.InstanceAsync(Name, ct).ConfigureAwait(false);
                }
                catch (BackendUnavailableException)
                {
                    if (!_unreachableLogged)
                    {
                        _unreachableLogged = true;
                        LxdLog.WatchInterrupted(_logger, Name, _client.Flavor.Product);
                    }

                    return ProbeOutcome.NotYet<(int?, string)>("the API is unreachable");
                }

                _unreachableLogged = false;
                if (instance is { Running: true })
                {
                    await PullConsoleQuietlyAsync(stopped: false, ct).ConfigureAwait(false);
                }

                // LXD tells no exit code of a container's init: a clean stop counts as 0, anything else as unknown.
                return instance is null ? ProbeOutcome.Done<(int?, string)>((null, $"instance {Name} was deleted outside Falk"))
                    : !instance.Ended || _restoring ? ProbeOutcome.NotYet<(int?, string)>(instance.Status)
                    : ProbeOutcome.Done<(int?, string)>((instance.Status == "Stopped" ? 0 : null, $"instance {Name} is {instance.Status.ToLowerInvariant()}"));
            }, WatchInterval, TimeSpan.MaxValue, $"the end of machine {Name}", token).ConfigureAwait(false);
            await PullConsoleQuietlyAsync(stopped: true, token).ConfigureAwait(false);
            LxdLog.Ended(_logger, Name, description);
            return new MachineExit(code, description, OutputTail());
        }
        catch (OperationCanceledException)
        {
            return new MachineExit(null, $"instance {Name} was removed by Falk", OutputTail());
        }
    }

    /// <summary>The length of the longest end of <paramref name="have"/> that <paramref name="part"/> starts with.</summary>
    private static int Overlap(ReadOnlySpan<byte> have, ReadOnlySpan<byte> part)
    {
        for (var length = Math.Min(have.Length, part.Length); length > 0; length--)
        {
            if (have[^length..].SequenceEqual(part[..length]))
            {
                return length;
            }
        }

        return 0;
    }

    private async Task PullConsoleQuietlyAsync(bool stopped, CancellationToken token)
    {
        try
        {
            await PullConsoleAsync(stopped, token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is BackendUnavailableException or LxdApiException or IOException)
        {
            // The next look collects it.
        }
    }

    private async Task Api(string operation, Func<Task> action) =>
        await Api<bool>(operation, async () =>
        {
            await action().ConfigureAwait(false);
            return true;
        }).ConfigureAwait(false);

    /// <summary>A refusal of the daemon becomes a <see cref="BackendOperationException"/> naming the machine and the operation.</summary>
    private async Task<T> Api<T>(string operation, Func<Task<T>> action)
    {
        try
        {
            return await action().ConfigureAwait(false);
        }
        catch (LxdApiException e) when (e.IsNotFound && operation is "start")
        {
            throw new BackendOperationException($"instance {Name} of machine {Name} is gone (deleted outside Falk); delete the machine", e);
        }
        catch (LxdApiException e)
        {
            LxdLog.OperationFailed(_logger, Name, operation, e.DaemonMessage);
            throw new BackendOperationException($"{_client.Flavor.Product} could not {operation} machine {Name}: {e.DaemonMessage}", e);
        }
    }
}

/// <summary>
/// What an LXD machine needs to be rebuilt after a restart: the image it was made from, whether that was a committed
/// version, the host keys pinned at prepare and, with <c>ssh_host = __dynamic__</c>, the address it was given.
/// </summary>
internal sealed record LxdHandle(string Fingerprint, bool FromCommittedVersion, IReadOnlyList<string>? HostKeys, string? DynamicHost);
