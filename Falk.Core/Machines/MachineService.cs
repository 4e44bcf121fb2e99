using System.Collections.Concurrent;
using Falk.Core.Config;
using Falk.Core.Ssh;
using Falk.Core.State;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Machines;

/// <summary>What a client asks for when it creates a machine.</summary>
/// <param name="LeaseSeconds">How long the machine may live without a renewal; null for the configured default.</param>
/// <param name="IdempotencyKey">A client's key for this create: a retry with the same key gets the same machine.</param>
public sealed record CreateMachineRequest(string Template, bool Manage, IReadOnlyDictionary<string, string> Labels, int? LeaseSeconds = null, string? IdempotencyKey = null);

/// <summary>How much of the daemon's capacity is in use.</summary>
public sealed record CapacityView(int Machines, int MaxMachines, int PortsInUse, int PortsTotal);

/// <summary>
/// Owns every machine: creation, the state machine, and tearing down. Safe under concurrent requests:
/// a state check and its transition happen under the machine's lock, so of two boots one wins and the
/// other gets <see cref="MachineStateConflictException"/>; a delete cancels whatever the machine is doing.
/// </summary>
public sealed class MachineService : IAsyncDisposable
{
    private static readonly TimeSpan RetryAfter = TimeSpan.FromSeconds(10);

    /// <summary>The recorded state of a machine whose prepare has not finished.</summary>
    private const string PreparingState = "preparing";

    private readonly FalkConfig _config;
    private readonly Dictionary<string, IMachineBackend> _backends;
    private readonly PortAllocator _ports;
    private readonly SshReadiness _ssh;
    private readonly TimeProvider _time;
    private readonly ILogger<MachineService> _logger;
    private readonly MachineEvents _events;
    private readonly MachineStore _store;
    private readonly ConcurrentDictionary<(int Owner, string Key), Lazy<Task<MachineView>>> _idempotentCreates = new();
    private readonly ConcurrentDictionary<string, Machine> _machines = new(StringComparer.Ordinal);
    private readonly Lock _capacityLock = new();
    private readonly Dictionary<string, string> _managementByTemplate = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _machinesByTemplate = new(StringComparer.Ordinal);
    private readonly Dictionary<int, int> _machinesByOwner = [];
    private int _machineCount;

    public MachineService(FalkConfig config, IEnumerable<IMachineBackend> backends, PortAllocator ports,
        SshReadiness ssh, MachineEvents events, MachineStore store, TimeProvider time, ILogger<MachineService> logger)
    {
        _store = store;
        _events = events;
        _config = config;
        _backends = backends.ToDictionary(b => b.Type, StringComparer.Ordinal);
        _ports = ports;
        _ssh = ssh;
        _time = time;
        _logger = logger;
    }

    public IReadOnlyList<TemplateDefinition> Templates => _config.Templates;

    public IReadOnlyCollection<string> BackendTypes => _backends.Keys;

    public CapacityView Capacity
    {
        get
        {
            lock (_capacityLock)
            {
                return new CapacityView(_machineCount, _config.Daemon.MaxMachines, _ports.InUseCount, _ports.Range.Count);
            }
        }
    }

    public TemplateDefinition GetTemplate(string name)
    {
        if (Names.Problem(name) is { } problem)
        {
            throw new InvalidRequestException("template", $"template name {problem}");
        }

        return _config.Templates.FirstOrDefault(t => t.Name == name) ?? throw new TemplateNotFoundException(name);
    }

    /// <summary>
    /// Allocates and prepares a machine. With an idempotency key, concurrent and later retries of the same key
    /// by the same owner get the same machine while it exists; a create that failed can be retried with the key.
    /// </summary>
    public async Task<MachineView> CreateAsync(CreateMachineRequest request, Caller caller, CancellationToken cancellationToken)
    {
        if (request.IdempotencyKey is null)
        {
            return await CreateNewAsync(request, caller, cancellationToken).ConfigureAwait(false);
        }

        if (request.IdempotencyKey.Length is 0 or > 128 || request.IdempotencyKey.Any(char.IsControl))
        {
            throw new InvalidRequestException("Idempotency-Key", "the Idempotency-Key header must be 1-128 printable characters");
        }

        var slot = (caller.Uid, request.IdempotencyKey);
        while (true)
        {
            var attempt = new Lazy<Task<MachineView>>(() => CreateNewAsync(request, caller, CancellationToken.None));
            var winner = _idempotentCreates.GetOrAdd(slot, attempt);
            try
            {
                var machine = await winner.Value.WaitAsync(cancellationToken).ConfigureAwait(false);
                if (_machines.ContainsKey(machine.Id))
                {
                    return Find(machine.Id, caller).View();
                }
            }
            catch (Exception) when (!ReferenceEquals(winner, attempt) && !cancellationToken.IsCancellationRequested)
            {
                // Another request's create under this key failed; try afresh below.
            }
            catch
            {
                _idempotentCreates.TryRemove(new KeyValuePair<(int, string), Lazy<Task<MachineView>>>(slot, attempt));
                throw;
            }

            // The machine made under this key is gone (or its create failed): the key is free again.
            _idempotentCreates.TryRemove(new KeyValuePair<(int, string), Lazy<Task<MachineView>>>(slot, winner));
        }
    }

    private async Task<MachineView> CreateNewAsync(CreateMachineRequest request, Caller caller, CancellationToken cancellationToken)
    {
        var template = GetTemplate(request.Template);
        var lease = LeaseDuration(request.LeaseSeconds);
        Names.ValidateLabels(request.Labels);
        if (request.Manage && !template.ManageSupported)
        {
            throw new InvalidRequestException("manage", $"template '{template.Name}' ({template.Type}) has no management mode");
        }

        if (request.Manage && !caller.IsAdmin)
        {
            throw new AccessDeniedException("management mode is for admins only");
        }

        var backend = _backends[template.Type];
        var id = Names.NewMachineId();
        if (request.Manage)
        {
            ClaimManagement(template, id);
        }

        int port;
        try
        {
            port = ReserveCapacity(template, caller.Uid);
        }
        catch
        {
            ReleaseManagement(template, id);
            throw;
        }

        var workDirectory = WorkDirectoryOf(id);
        var now = _time.GetUtcNow();
        IMachineInstance instance;
        try
        {
            // Recorded before anything is made: a crash from here on leaves a row that the next start cleans up.
            _store.Insert(new MachineRecord(id, template.Type, template.Name, request.Manage, caller.Uid, port, request.Labels,
                now, now + lease, PreparingState, null, workDirectory, null, request.IdempotencyKey, null));
            Directory.CreateDirectory(workDirectory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            instance = await backend.PrepareAsync(Spec(id, template, request.Manage, port, caller.Uid, request.Labels), cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            ReleaseCapacity(template, caller.Uid, port);
            ReleaseManagement(template, id);
            RemoveWorkDirectory(workDirectory);
            _store.Delete(id);
            MachineLog.PrepareFailed(_logger, template.Name, e);
            throw;
        }

        _store.UpdateHandle(id, instance.Handle);
        _store.UpdateState(id, MachineState.Prepared.ToWire(), null);
        var machine = new Machine(id, template, request.Manage, caller.Uid, port, request.Labels, instance, workDirectory, now, now + lease);
        _machines[id] = machine;
        MachineLog.Prepared(_logger, id, template.Name, request.Manage, port, caller.Uid);
        _events.Publish(MachineEventTypes.Created, machine, MachineState.Prepared);
        return machine.View();
    }

    public IReadOnlyList<MachineView> List(Caller caller) =>
        _machines.Values
            .Where(m => caller.IsAdmin || m.OwnerUid == caller.Uid)
            .Select(m => m.View())
            .OrderBy(m => m.CreatedAt)
            .ToList();

    public MachineView Get(string id, Caller caller) => Find(id, caller).View();

    /// <summary>
    /// Launches the machine; with <paramref name="waitForSsh"/> returns only once SSH presents a pinned host key.
    /// The launch itself is not undone when the client goes away; a delete or stop cancels the wait.
    /// </summary>
    public async Task<MachineView> BootAsync(string id, Caller caller, bool waitForSsh, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var machine = Find(id, caller);
        CancellationTokenSource boot;
        lock (machine.Sync)
        {
            ThrowIfDeleting(machine);
            if (!machine.State.CanBoot())
            {
                throw new MachineStateConflictException(id, machine.State, "boot", $"machine {id} is {machine.State.ToWire()}: only a prepared or stopped machine can boot");
            }

            Transition(machine, MachineState.Booting);
            machine.LastError = null;
            boot = CancellationTokenSource.CreateLinkedTokenSource(machine.Lifetime.Token);
            machine.BootCancellation = boot;
        }

        try
        {
            await machine.Operation.WaitAsync(boot.Token).ConfigureAwait(false);
            try
            {
                await machine.Instance.LaunchAsync(boot.Token).ConfigureAwait(false);
                _store.UpdateHandle(id, machine.Instance.Handle);
            }
            finally
            {
                machine.Operation.Release();
            }

            var exited = machine.Instance.Exited!;
            _ = ObserveExitAsync(machine, exited);

            if (waitForSsh)
            {
                using var wait = CancellationTokenSource.CreateLinkedTokenSource(boot.Token, cancellationToken);
                var key = await _ssh.WaitAsync(Endpoint(machine), machine.PinnedHostKeys, timeout, exited,
                    () => ThrowIfExited(machine, exited), wait.Token).ConfigureAwait(false);
                lock (machine.Sync)
                {
                    machine.ObservedHostKey = key;
                }

                _store.UpdateObservedHostKey(id, key.PublicKeyLine);

                _events.Publish(MachineEventTypes.Ready, machine, detail: key.FingerprintSha256);
                if (machine.PinnedHostKeys.Count == 0)
                {
                    MachineLog.UnverifiedHostKey(_logger, id, key.FingerprintSha256);
                }
                else
                {
                    MachineLog.SshReady(_logger, id, key.FingerprintSha256);
                }
            }

            MarkRunning(machine);
            return machine.View();
        }
        catch (Exception e) when (machine.Lifetime.IsCancellationRequested && e is OperationCanceledException or FalkException)
        {
            // Whatever the wait saw last (a cancellation, the process killed), the cause is the delete.
            throw new MachineStateConflictException(id, MachineState.Stopping, "boot", $"machine {id} was deleted while booting");
        }
        catch (Exception e) when (boot.IsCancellationRequested && e is OperationCanceledException or FalkException)
        {
            throw new MachineStateConflictException(id, MachineState.Stopping, "boot", $"machine {id} was stopped while booting");
        }
        catch (OperationCanceledException)
        {
            // The client went away; the machine was launched and keeps running.
            MarkRunning(machine);
            throw;
        }
        catch (WaitTimeoutException e)
        {
            // Still running, just not reachable yet: the client may wait again or delete it.
            MarkRunning(machine, e.Message);
            throw;
        }
        catch (Exception e) when (e is FalkException)
        {
            await FailAsync(machine, e.Message).ConfigureAwait(false);
            throw;
        }
        finally
        {
            lock (machine.Sync)
            {
                if (machine.BootCancellation == boot)
                {
                    machine.BootCancellation = null;
                }
            }

            boot.Dispose();
        }
    }

    /// <summary>Waits for a launched machine to stop by itself (the guest powers off, the process ends).</summary>
    public async Task<MachineView> WaitUntilStoppedAsync(string id, Caller caller, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var machine = Find(id, caller);
        Task<MachineExit>? exited;
        lock (machine.Sync)
        {
            ThrowIfDeleting(machine);
            if (machine.State is MachineState.Stopped or MachineState.Failed)
            {
                return machine.View();
            }

            exited = machine.Instance.Exited;
            if (machine.State == MachineState.Prepared || exited is null)
            {
                throw new MachineStateConflictException(id, machine.State, "wait for stop", $"machine {id} is {machine.State.ToWire()}: it was never booted");
            }
        }

        using var wait = CancellationTokenSource.CreateLinkedTokenSource(machine.Lifetime.Token, cancellationToken);
        try
        {
            await exited.WaitAsync(timeout, wait.Token).ConfigureAwait(false);
            OnExited(machine, exited);
            return machine.View();
        }
        catch (TimeoutException)
        {
            throw new WaitTimeoutException($"machine {id} did not stop within {timeout.TotalSeconds:0.#} s");
        }
        catch (OperationCanceledException) when (machine.Lifetime.IsCancellationRequested)
        {
            throw new MachineNotFoundException(id);
        }
    }

    /// <summary>Asks the guest to shut down, and forces it off after <paramref name="grace"/>.</summary>
    public async Task<MachineView> StopAsync(string id, Caller caller, TimeSpan grace, CancellationToken cancellationToken)
    {
        var machine = Find(id, caller);
        lock (machine.Sync)
        {
            ThrowIfDeleting(machine);
            if (machine.State == MachineState.Stopped)
            {
                return machine.View();
            }

            if (!machine.State.CanStop())
            {
                throw new MachineStateConflictException(id, machine.State, "stop", $"machine {id} is {machine.State.ToWire()}: only a booting or running machine can stop");
            }

            Transition(machine, MachineState.Stopping);
            machine.BootCancellation?.Cancel();
        }

        // The stop is finished even if the client goes away: a half-stopped machine helps nobody.
        try
        {
            await machine.Operation.WaitAsync(machine.Lifetime.Token).ConfigureAwait(false);
            try
            {
                await machine.Instance.StopAsync(grace, machine.Lifetime.Token).ConfigureAwait(false);
            }
            finally
            {
                machine.Operation.Release();
            }
        }
        catch (OperationCanceledException) when (machine.Lifetime.IsCancellationRequested)
        {
            throw new MachineNotFoundException(id);
        }

        lock (machine.Sync)
        {
            if (machine.Deletion is null && machine.State == MachineState.Stopping)
            {
                Transition(machine, MachineState.Stopped);
            }
        }

        return machine.View();
    }

    /// <summary>Stops the machine hard and removes everything made for it. Deleting an unknown id is not an error.</summary>
    public async Task DeleteAsync(string id, Caller caller, CancellationToken cancellationToken)
    {
        if (!_machines.TryGetValue(id, out var machine) || !CanSee(caller, machine))
        {
            return;
        }

        TaskCompletionSource? ongoing = null;
        var deletion = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (machine.Sync)
        {
            if (machine.Deletion is not null)
            {
                ongoing = machine.Deletion;
            }
            else
            {
                machine.Deletion = deletion;
            }
        }

        if (ongoing is not null)
        {
            await ongoing.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
            return;
        }

        // Cancel every wait on the machine, then wait for a running launch or stop to let go.
        await machine.Lifetime.CancelAsync().ConfigureAwait(false);
        await machine.Operation.WaitAsync(CancellationToken.None).ConfigureAwait(false);
        try
        {
            await machine.Instance.KillAsync(CancellationToken.None).ConfigureAwait(false);
            await machine.Instance.CleanupAsync(CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            MachineLog.CleanupFailed(_logger, id, e);
            lock (machine.Sync)
            {
                // Keep the record (and its port) so nothing is leaked unseen; a later delete retries.
                Transition(machine, MachineState.Failed);
                machine.LastError = $"cleanup failed: {e.Message}";
                machine.Deletion = null;
            }

            machine.Operation.Release();
            var failure = new BackendOperationException($"machine {id} could not be cleaned up: {e.Message}", e);
            deletion.TrySetException(failure);
            throw failure;
        }

        _machines.TryRemove(id, out _);
        _store.Delete(id);
        RemoveWorkDirectory(machine.WorkDirectory);
        ReleaseManagement(machine.Template, id);
        ReleaseCapacity(machine.Template, machine.OwnerUid, machine.SshPort);
        machine.Operation.Release();
        MachineLog.Deleted(_logger, id);
        _events.Publish(MachineEventTypes.Destroyed, machine);
        deletion.TrySetResult();
    }

    public SshAccess GetSsh(string id, Caller caller) => Get(id, caller).Ssh;

    /// <summary>Sets the machine's lease to end <paramref name="seconds"/> from now.</summary>
    public MachineView RenewLease(string id, Caller caller, int seconds)
    {
        var machine = Find(id, caller);
        var lease = LeaseDuration(seconds);
        lock (machine.Sync)
        {
            ThrowIfDeleting(machine);
            machine.LeaseExpiresAt = _time.GetUtcNow() + lease;
            _store.UpdateLease(id, machine.LeaseExpiresAt);
        }

        _events.Publish(MachineEventTypes.LeaseRenewed, machine, detail: machine.View().LeaseExpiresAt.ToString("O", System.Globalization.CultureInfo.InvariantCulture));
        return machine.View();
    }

    /// <summary>Destroys, through the same path as DELETE, every machine whose lease has run out. Returns how many.</summary>
    public async Task<int> DestroyExpiredAsync(CancellationToken cancellationToken)
    {
        var now = _time.GetUtcNow();
        var expired = _machines.Values.Where(m => m.View().LeaseExpiresAt <= now && !m.IsBeingDeleted).ToList();
        foreach (var machine in expired)
        {
            if (!machine.LeaseExpiryReported)
            {
                machine.LeaseExpiryReported = true;
                MachineLog.LeaseExpired(_logger, machine.Id, machine.View().LeaseExpiresAt);
                _events.Publish(MachineEventTypes.LeaseExpired, machine);
            }

            try
            {
                await DeleteAsync(machine.Id, Caller.Daemon, cancellationToken).ConfigureAwait(false);
            }
            catch (FalkException)
            {
                // Logged by DeleteAsync; the machine stays failed and is retried on the next round.
            }
        }

        return expired.Count;
    }

    /// <summary>Events the caller may see: its own machines', or all for admins.</summary>
    public IAsyncEnumerable<MachineEvent> SubscribeAsync(Caller caller, long? afterId, CancellationToken cancellationToken) =>
        _events.SubscribeAsync(afterId, e => caller.IsAdmin || e.OwnerUid == caller.Uid, cancellationToken);

    /// <summary>Writes the machine's console to <paramref name="destination"/>; with follow, until the machine stops.</summary>
    public async Task CopyConsoleAsync(string id, Caller caller, Stream destination, bool follow, CancellationToken cancellationToken)
    {
        var machine = Find(id, caller);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(machine.Lifetime.Token, cancellationToken);
        try
        {
            await machine.Instance.CopyConsoleAsync(destination, follow, linked.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (machine.Lifetime.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            // The machine was deleted while its console was followed: that ends the stream.
        }
    }

    public async Task<SnapshotInfo> CreateSnapshotAsync(string id, Caller caller, string name, CancellationToken cancellationToken)
    {
        ValidateSnapshotName(name);
        return await WithSnapshotsAsync(id, caller, "take snapshots", async (machine, snapshots) =>
        {
            var existing = await snapshots.ListSnapshotsAsync(cancellationToken).ConfigureAwait(false);
            if (existing.Any(s => s.Name == name))
            {
                throw new SnapshotExistsException(machine.Id, name);
            }

            var snapshot = await snapshots.CreateSnapshotAsync(name, cancellationToken).ConfigureAwait(false);
            MachineLog.SnapshotTaken(_logger, machine.Id, name);
            _events.Publish(MachineEventTypes.SnapshotTaken, machine, detail: name);
            return snapshot;
        }).ConfigureAwait(false);
    }

    public Task<IReadOnlyList<SnapshotInfo>> ListSnapshotsAsync(string id, Caller caller, CancellationToken cancellationToken) =>
        WithSnapshotsAsync(id, caller, "take snapshots", (_, snapshots) => snapshots.ListSnapshotsAsync(cancellationToken));

    public async Task<MachineView> RestoreSnapshotAsync(string id, Caller caller, string name, CancellationToken cancellationToken)
    {
        ValidateSnapshotName(name);
        return await WithSnapshotsAsync(id, caller, "restore snapshots", async (machine, snapshots) =>
        {
            var existing = await snapshots.ListSnapshotsAsync(cancellationToken).ConfigureAwait(false);
            if (existing.All(s => s.Name != name))
            {
                throw new SnapshotNotFoundException(machine.Id, name);
            }

            await snapshots.RestoreSnapshotAsync(name, cancellationToken).ConfigureAwait(false);
            _store.UpdateHandle(machine.Id, machine.Instance.Handle);
            MachineLog.SnapshotRestored(_logger, machine.Id, name);
            _events.Publish(MachineEventTypes.SnapshotRestored, machine, detail: name);
            return machine.View();
        }).ConfigureAwait(false);
    }

    /// <summary>
    /// Publishes a management machine's disk as its template's new image. A running guest is first asked to shut
    /// down (forced after <paramref name="grace"/>); the machine stays, stopped, until it is deleted.
    /// </summary>
    public async Task<CommitResult> CommitAsync(string id, Caller caller, TimeSpan grace, CancellationToken cancellationToken)
    {
        var machine = Find(id, caller);
        if (!machine.Manage)
        {
            throw new ManagementConflictException($"machine {id} is not a management machine: only those can be committed");
        }

        if (machine.Instance is not ICommitSupport commits)
        {
            throw new NotSupportedByBackendException(id, machine.Template.Type, "commit");
        }

        lock (machine.Sync)
        {
            ThrowIfDeleting(machine);
            if (machine.State is MachineState.Booting or MachineState.Stopping)
            {
                throw new MachineStateConflictException(id, machine.State, "commit", $"machine {id} is {machine.State.ToWire()}: wait until it is running or stopped");
            }
        }

        if (machine.State == MachineState.Running)
        {
            await StopAsync(id, caller, grace, cancellationToken).ConfigureAwait(false);
        }

        using var linked = CancellationTokenSource.CreateLinkedTokenSource(machine.Lifetime.Token, cancellationToken);
        await machine.Operation.WaitAsync(linked.Token).ConfigureAwait(false);
        try
        {
            var result = await commits.CommitAsync(linked.Token).ConfigureAwait(false);
            _store.UpdateHandle(id, machine.Instance.Handle);
            MachineLog.Committed(_logger, id, machine.Template.Name, result.Version);
            _events.Publish(MachineEventTypes.Committed, machine, detail: result.Version);
            return result;
        }
        finally
        {
            machine.Operation.Release();
        }
    }

    /// <summary>
    /// Daemon shutdown: with <c>on_shutdown = destroy</c> destroys every machine, in parallel; with <c>keep</c> leaves
    /// them running, recorded, for the next start to take back.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        var machines = _machines.Keys.ToList();
        if (_config.Daemon.OnShutdown == ShutdownPolicy.Keep)
        {
            MachineLog.KeepingAll(_logger, machines.Count);
            return;
        }

        if (machines.Count > 0)
        {
            MachineLog.DestroyingAll(_logger, machines.Count);
        }

        await Task.WhenAll(machines.Select(async id =>
        {
            try
            {
                await DeleteAsync(id, Caller.Daemon, CancellationToken.None).ConfigureAwait(false);
            }
            catch (FalkException)
            {
                // Logged by DeleteAsync; shutdown goes on with the others.
            }
        })).ConfigureAwait(false);
    }

    /// <summary>
    /// At start: takes back every recorded machine that is still alive, keeping its id, port and lease, cleans up
    /// the rest, and removes what this daemon made but never recorded.
    /// </summary>
    public async Task RecoverAsync(CancellationToken cancellationToken)
    {
        // Machines whose record stays although they could not be taken back now: never swept as orphans.
        var keptRecords = new HashSet<string>(StringComparer.Ordinal);
        foreach (var record in _store.All())
        {
            var template = _config.Templates.FirstOrDefault(t => t.Name == record.Template && t.Type == record.Type);
            if (template is null || !_backends.TryGetValue(record.Type, out var backend))
            {
                MachineLog.CannotRecover(_logger, record.Id, record.Template, record.Type);
                keptRecords.Add(record.Id);
                continue;
            }

            MachineState? recordedState = Enum.TryParse<MachineState>(record.State, ignoreCase: true, out var parsed) ? parsed : null;
            var spec = Spec(record.Id, template, record.Manage, record.Port, record.OwnerUid, record.Labels);
            ReattachedMachine? reattached;
            try
            {
                reattached = await backend.ReattachAsync(spec, record.Handle, recordedState, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e) when (e is FalkException or IOException)
            {
                MachineLog.CleanupFailed(_logger, record.Id, e);
                keptRecords.Add(record.Id);
                continue;
            }

            if (reattached is null)
            {
                RemoveWorkDirectory(record.WorkDirectory);
                _store.Delete(record.Id);
                MachineLog.CleanedUpAfterRestart(_logger, record.Id, record.State);
                continue;
            }

            TakeBack(record, template, reattached);
        }

        var known = _machines.Keys.Concat(keptRecords).ToHashSet(StringComparer.Ordinal);
        foreach (var backend in _backends.Values)
        {
            await backend.RemoveOrphansAsync(known, cancellationToken).ConfigureAwait(false);
        }

        var machinesFolder = Path.Combine(_config.Daemon.StateDirectory, "machines");
        if (Directory.Exists(machinesFolder))
        {
            foreach (var folder in Directory.EnumerateDirectories(machinesFolder).Where(f => !known.Contains(Path.GetFileName(f))))
            {
                MachineLog.OrphanRemoved(_logger, Path.GetFileName(folder), folder);
                RemoveWorkDirectory(folder);
            }
        }
    }

    private void TakeBack(MachineRecord record, TemplateDefinition template, ReattachedMachine reattached)
    {
        lock (_capacityLock)
        {
            _ports.Claim(record.Port);
            _machineCount++;
            _machinesByTemplate[template.Name] = _machinesByTemplate.GetValueOrDefault(template.Name) + 1;
            _machinesByOwner[record.OwnerUid] = _machinesByOwner.GetValueOrDefault(record.OwnerUid) + 1;
            if (record.Manage)
            {
                _managementByTemplate[template.Name] = record.Id;
            }
        }

        var machine = new Machine(record.Id, template, record.Manage, record.OwnerUid, record.Port, record.Labels, reattached.Instance,
            record.WorkDirectory, record.CreatedAt, record.LeaseExpiresAt);
        var state = reattached.Running ? MachineState.Running
            : record.State == MachineState.Prepared.ToWire() ? MachineState.Prepared
            : MachineState.Stopped;
        lock (machine.Sync)
        {
            machine.SetState(state, _time.GetUtcNow());
            machine.LastError = record.LastError;
            machine.ObservedHostKey = record.ObservedHostKey is null ? null : HostKey.TryParse(record.ObservedHostKey, out _);
        }

        _store.UpdateState(record.Id, state.ToWire(), record.LastError);
        _machines[record.Id] = machine;
        if (record.IdempotencyKey is { } key)
        {
            _idempotentCreates[(record.OwnerUid, key)] = new Lazy<Task<MachineView>>(Task.FromResult(machine.View()));
        }

        if (reattached.Running && reattached.Instance.Exited is { } exited)
        {
            _ = ObserveExitAsync(machine, exited);
        }

        MachineLog.Reattached(_logger, record.Id, state.ToWire(), record.Port);
    }

    private string WorkDirectoryOf(string id) => Path.Combine(_config.Daemon.StateDirectory, "machines", id);

    private MachineSpec Spec(string id, TemplateDefinition template, bool manage, int port, int owner, IReadOnlyDictionary<string, string> labels) =>
        new(id, template, manage, port, owner, labels, WorkDirectoryOf(id), _config.Daemon.InstanceId);

    private Machine Find(string id, Caller caller)
    {
        if (Names.Problem(id) is { } problem)
        {
            throw new InvalidRequestException("id", $"machine id {problem}");
        }

        return _machines.TryGetValue(id, out var machine) && CanSee(caller, machine)
            ? machine
            : throw new MachineNotFoundException(id);
    }

    private async Task<T> WithSnapshotsAsync<T>(string id, Caller caller, string operation, Func<Machine, ISnapshotSupport, Task<T>> action)
    {
        var machine = Find(id, caller);
        if (machine.Instance is not ISnapshotSupport snapshots)
        {
            throw new NotSupportedByBackendException(id, machine.Template.Type, operation);
        }

        lock (machine.Sync)
        {
            ThrowIfDeleting(machine);
            if (machine.State is MachineState.Booting or MachineState.Stopping or MachineState.Failed)
            {
                throw new MachineStateConflictException(id, machine.State, operation);
            }
        }

        await machine.Operation.WaitAsync(machine.Lifetime.Token).ConfigureAwait(false);
        try
        {
            return await action(machine, snapshots).ConfigureAwait(false);
        }
        finally
        {
            machine.Operation.Release();
        }
    }

    private static void ValidateSnapshotName(string name)
    {
        if (Names.Problem(name) is { } problem)
        {
            throw new InvalidRequestException("name", $"snapshot name {problem}");
        }
    }

    /// <summary>One management machine per template: a second one would edit the same image.</summary>
    private void ClaimManagement(TemplateDefinition template, string machineId)
    {
        lock (_capacityLock)
        {
            if (_managementByTemplate.TryGetValue(template.Name, out var holder))
            {
                throw new ManagementConflictException($"template '{template.Name}' already has a management machine ({holder}); delete it first");
            }

            _managementByTemplate[template.Name] = machineId;
        }
    }

    private void ReleaseManagement(TemplateDefinition template, string machineId)
    {
        lock (_capacityLock)
        {
            if (_managementByTemplate.TryGetValue(template.Name, out var holder) && holder == machineId)
            {
                _managementByTemplate.Remove(template.Name);
            }
        }
    }

    private static void RemoveWorkDirectory(string path)
    {
        if (Directory.Exists(path))
        {
            Directory.Delete(path, recursive: true);
        }
    }

    private static bool CanSee(Caller caller, Machine machine) => caller.IsAdmin || machine.OwnerUid == caller.Uid;

    private static void ThrowIfDeleting(Machine machine)
    {
        if (machine.Deletion is not null)
        {
            throw new MachineNotFoundException(machine.Id);
        }
    }

    private static SshEndpoint Endpoint(Machine machine) => new(machine.SshTarget.Host, machine.SshTarget.Port, machine.Template.SshUser);

    private static void ThrowIfExited(Machine machine, Task<MachineExit> exited)
    {
        if (exited.IsCompletedSuccessfully)
        {
            var exit = exited.Result;
            throw new MachineFailedException(machine.Id, $"machine {machine.Id} ended while booting: {exit.Description}", exit.ExitCode, exit.OutputTail);
        }
    }

    private int ReserveCapacity(TemplateDefinition template, int owner)
    {
        lock (_capacityLock)
        {
            if (_machineCount >= _config.Daemon.MaxMachines)
            {
                throw new CapacityExhaustedException($"all {_config.Daemon.MaxMachines} machines are in use (max_machines)", RetryAfter);
            }

            var ofTemplate = _machinesByTemplate.GetValueOrDefault(template.Name);
            if (template.MaxMachines is { } templateLimit && ofTemplate >= templateLimit)
            {
                throw new CapacityExhaustedException($"all {templateLimit} machines of template '{template.Name}' are in use (its max_machines)", RetryAfter);
            }

            var ofOwner = _machinesByOwner.GetValueOrDefault(owner);
            if (_config.Daemon.MaxMachinesPerOwner is { } ownerLimit && ofOwner >= ownerLimit && owner != Caller.Daemon.Uid)
            {
                throw new CapacityExhaustedException($"uid {owner} already has {ofOwner} machines (max_machines_per_owner)", RetryAfter);
            }

            int port;
            if (template.SshPort is { } fixedPort)
            {
                if (!_ports.TryReserve(fixedPort))
                {
                    throw new CapacityExhaustedException($"template '{template.Name}' uses the fixed ssh_port {fixedPort}, which is in use", RetryAfter);
                }

                port = fixedPort;
            }
            else
            {
                port = _ports.TryAllocate()
                    ?? throw new CapacityExhaustedException($"no free port in vm_ports {_ports.Range}", RetryAfter);
            }

            _machineCount++;
            _machinesByTemplate[template.Name] = ofTemplate + 1;
            _machinesByOwner[owner] = ofOwner + 1;
            return port;
        }
    }

    private void ReleaseCapacity(TemplateDefinition template, int owner, int port)
    {
        lock (_capacityLock)
        {
            _ports.Release(port);
            _machineCount--;
            _machinesByTemplate[template.Name]--;
            _machinesByOwner[owner]--;
        }
    }

    private TimeSpan LeaseDuration(int? seconds)
    {
        var max = _config.Daemon.MaxLeaseSeconds;
        return seconds switch
        {
            null => TimeSpan.FromSeconds(_config.Daemon.DefaultLeaseSeconds),
            < 1 => throw new InvalidRequestException("lease_seconds", $"lease_seconds must be from 1 to {max}, not {seconds}"),
            _ when seconds > max => throw new InvalidRequestException("lease_seconds", $"lease_seconds must be from 1 to {max} (max_lease_seconds), not {seconds}"),
            _ => TimeSpan.FromSeconds(seconds.Value),
        };
    }

    private void Transition(Machine machine, MachineState state, string? detail = null)
    {
        machine.SetState(state, _time.GetUtcNow());
        _store.UpdateState(machine.Id, state.ToWire(), machine.LastError ?? detail);
        MachineLog.StateChanged(_logger, machine.Id, state.ToWire());
        _events.Publish(state.ToWire(), machine, state, detail);
    }

    private void MarkRunning(Machine machine, string? lastError = null)
    {
        lock (machine.Sync)
        {
            if (machine.State == MachineState.Booting && machine.Deletion is null)
            {
                Transition(machine, MachineState.Running);
                machine.LastError = lastError;
            }
        }
    }

    private async Task FailAsync(Machine machine, string error)
    {
        lock (machine.Sync)
        {
            if (machine.Deletion is not null)
            {
                return;
            }

            machine.LastError = error;
            Transition(machine, MachineState.Failed, error);
        }

        MachineLog.Failed(_logger, machine.Id, error);

        // A machine that failed to boot (or showed the wrong host key) is not left running.
        await machine.Operation.WaitAsync(CancellationToken.None).ConfigureAwait(false);
        try
        {
            await machine.Instance.KillAsync(CancellationToken.None).ConfigureAwait(false);
        }
        finally
        {
            machine.Operation.Release();
        }
    }

    private async Task ObserveExitAsync(Machine machine, Task<MachineExit> exited)
    {
        await exited.ConfigureAwait(false);
        OnExited(machine, exited);
    }

    /// <summary>The machine ended: a clean end while running is "stopped", anything else while running or booting "failed".</summary>
    private void OnExited(Machine machine, Task<MachineExit> exited)
    {
        var exit = exited.Result;
        lock (machine.Sync)
        {
            // An exit of an earlier launch, or of a machine being deleted, changes nothing.
            if (machine.Deletion is not null || !ReferenceEquals(machine.Instance.Exited, exited))
            {
                return;
            }

            switch (machine.State)
            {
                case MachineState.Running when exit.ExitCode == 0:
                    Transition(machine, MachineState.Stopped);
                    break;
                case MachineState.Running or MachineState.Booting:
                    Transition(machine, MachineState.Failed);
                    machine.LastError = $"{exit.Description}{(string.IsNullOrWhiteSpace(exit.OutputTail) ? string.Empty : "; output: " + exit.OutputTail)}";
                    break;
                default:
                    return;
            }
        }

        MachineLog.Exited(_logger, machine.Id, exit.Description);
    }
}
