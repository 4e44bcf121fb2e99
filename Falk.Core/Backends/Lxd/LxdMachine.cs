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

    // A restore stops and starts a running instance; the watch does not count that as the machine's end.
    private volatile bool _restoring;
    private volatile string? _dynamicHost;
    private volatile bool _unreachableLogged;

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
        var exited = Exited;
        return exited is { IsCompletedSuccessfully: true } ? exited.Result.OutputTail : string.Empty;
    }

    /// <summary>The instance's console log; following, new output every half second until the machine stops.</summary>
    public async Task CopyConsoleAsync(Stream destination, bool follow, CancellationToken cancellationToken)
    {
        var exited = Exited;
        follow = follow && exited is not null && !exited.IsCompleted;
        await destination.FlushAsync(cancellationToken).ConfigureAwait(false);
        var sent = 0;
        async Task<bool> CopyNewAsync(CancellationToken ct)
        {
            var log = await Api("read the console of", () => _client.ConsoleLogAsync(Name, ct)).ConfigureAwait(false);
            if (log.Length > sent)
            {
                await destination.WriteAsync(log.AsMemory(sent), ct).ConfigureAwait(false);
                await destination.FlushAsync(ct).ConfigureAwait(false);
                sent = log.Length;
            }

            return exited is null || exited.IsCompleted;
        }

        if (!follow)
        {
            await CopyNewAsync(cancellationToken).ConfigureAwait(false);
            return;
        }

        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _watch.Token);
        try
        {
            await Wait.UntilAsync(async ct => await CopyNewAsync(ct).ConfigureAwait(false) ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>("running"),
                WatchInterval, TimeSpan.MaxValue, "the machine's end", stop.Token, exited).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            // Cleanup ended the watch.
        }
        catch (BackendUnavailableException) when (!cancellationToken.IsCancellationRequested)
        {
            // The daemon went away mid-stream; what was sent stays sent.
        }
    }

    public async Task<SnapshotInfo> CreateSnapshotAsync(string name, CancellationToken cancellationToken)
    {
        await Api("snapshot", () => _client.CreateSnapshotAsync(Name, name, stateful: false, cancellationToken)).ConfigureAwait(false);
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

    public Task<CommitResult> CommitAsync(CancellationToken cancellationToken) =>
        Api("commit", () => _store.PublishAsync(Name, Name, _spec.Template, cancellationToken));

    /// <summary>Completes when the instance stops (by itself, by a stop or kill) or is deleted outside Falk.</summary>
    private async Task<MachineExit> WatchAsync()
    {
        var token = _watch.Token;
        try
        {
            var description = await Wait.UntilAsync(async ct =>
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

                    return ProbeOutcome.NotYet<string>("the API is unreachable");
                }

                _unreachableLogged = false;
                return instance is null ? ProbeOutcome.Done($"instance {Name} was deleted outside Falk")
                    : instance.Running || _restoring ? ProbeOutcome.NotYet<string>(instance.Status)
                    : ProbeOutcome.Done($"instance {Name} is {instance.Status.ToLowerInvariant()}");
            }, WatchInterval, TimeSpan.MaxValue, $"the end of machine {Name}", token).ConfigureAwait(false);
            var tail = await TailQuietlyAsync(token).ConfigureAwait(false);
            LxdLog.Ended(_logger, Name, description);
            return new MachineExit(null, description, tail);
        }
        catch (OperationCanceledException)
        {
            return new MachineExit(null, $"instance {Name} was removed by Falk", string.Empty);
        }
    }

    /// <summary>The last lines of the console log, for the machine's error; empty when they cannot be read.</summary>
    private async Task<string> TailQuietlyAsync(CancellationToken token)
    {
        try
        {
            var log = System.Text.Encoding.UTF8.GetString(await _client.ConsoleLogAsync(Name, token).ConfigureAwait(false));
            return string.Join('\n', log.TrimEnd().Split('\n').TakeLast(20));
        }
        catch (Exception e) when (e is BackendUnavailableException or LxdApiException or OperationCanceledException)
        {
            return string.Empty;
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
