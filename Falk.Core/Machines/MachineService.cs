using Falk.Core.Config;
using Falk.Core.State;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Machines;

/// <summary>What a client asks for when it creates a machine.</summary>
/// <param name="LeaseSeconds">How long the machine may live without a renewal; null for the configured default.</param>
/// <param name="IdempotencyKey">A client's key for this create: a retry with the same key gets the same machine.</param>
public sealed record CreateMachineRequest(string Template, bool Manage, IReadOnlyDictionary<string, string> Labels, int? LeaseSeconds = null, string? IdempotencyKey = null);

/// <summary>
/// The operations clients ask for (the API's endpoints call these): create, boot, stop, wait, delete, console, and
/// through the neighbours it composes, leases, snapshots and commit. Safe under concurrent requests: a state check
/// and its transition happen under the machine's lock, so of two boots one wins and the other gets
/// <see cref="MachineStateConflictException"/>; backend work runs as one <see cref="MachineJobs">job</see> at a time;
/// a delete cancels whatever the machine is doing.
/// </summary>
public sealed class MachineService(
    FalkConfig config,
    IEnumerable<IMachineBackend> backends,
    MachineTable table,
    Admission admission,
    MachineTransitions transitions,
    MachineJobs jobs,
    IdempotentCreates idempotency,
    MachineDestruction destruction,
    MachineImages images,
    MachineLeases leases,
    Ssh.SshReadiness ssh,
    MachineEvents events,
    WarmPools pools,
    MachineStore store,
    TimeProvider time,
    ILogger<MachineService> logger)
{
    /// <summary>The recorded state of a machine whose prepare has not finished.</summary>
    private const string PreparingState = "preparing";

    private readonly Dictionary<string, IMachineBackend> _backends = backends.ToDictionary(b => b.Type, StringComparer.Ordinal);
    private readonly TemplatePool _sections = new(config.Templates);
    private readonly PerUidSlots _eventStreams = new(config.Daemon.MaxEventStreamsPerUid);

    public IReadOnlyList<TemplateDefinition> Templates => config.Templates;

    public IReadOnlyCollection<string> BackendTypes => _backends.Keys;

    public CapacityView Capacity => admission.Capacity;

    internal int IdempotencyKeysHeld => idempotency.Count;

    /// <summary>The section of that id, else the first section of that name.</summary>
    public TemplateDefinition GetTemplate(string idOrName) => _sections.Resolve(idOrName)[0];

    /// <summary>
    /// Allocates and prepares a machine. With an idempotency key, concurrent and later retries of the same key
    /// by the same owner get the same machine while it exists; a create that failed can be retried with the key.
    /// </summary>
    public Task<MachineView> CreateAsync(CreateMachineRequest request, Caller caller, CancellationToken cancellationToken) =>
        request.IdempotencyKey is null
            ? CreateNewAsync(request, caller, cancellationToken)
            : idempotency.GetOrCreateAsync(caller, request.IdempotencyKey, () => CreateNewAsync(request, caller, CancellationToken.None),
                id => table.TryFind(id, caller)?.View(), cancellationToken);

    private async Task<MachineView> CreateNewAsync(CreateMachineRequest request, Caller caller, CancellationToken cancellationToken)
    {
        var candidates = _sections.Resolve(request.Template);
        var template = candidates[0];
        var lease = leases.Duration(request.LeaseSeconds);
        Names.ValidateLabels(request.Labels);
        if (request.Manage && !template.ManageSupported)
        {
            throw new InvalidRequestException("manage", $"template '{template.Name}' ({template.Type}) has no management mode");
        }

        if (request.Manage && !caller.IsAdmin)
        {
            throw new AccessDeniedException("management mode is for admins only");
        }

        // A management machine edits the image: it is always made afresh, never taken from a pool.
        if (!request.Manage && pools.TryHandOut(candidates, caller, request.Labels, lease, request.IdempotencyKey) is { } pooled)
        {
            return pooled.View();
        }

        using var cold = pools.EnterCold();
        var id = Names.NewMachineId();
        var reservation = await AdmitAsync(candidates, caller, request.Manage, id, cancellationToken).ConfigureAwait(false);
        var machine = await PrepareAsync(reservation, id, request.Manage, caller.Uid, request.Labels, time.GetUtcNow() + lease,
            request.IdempotencyKey, cancellationToken).ConfigureAwait(false);
        return machine.View();
    }

    /// <summary>Admits a machine; while the limits or ports are full and a pooled machine holds what is missing, that one goes first.</summary>
    private async Task<AdmissionReservation> AdmitAsync(IReadOnlyList<TemplateDefinition> candidates, Caller owner, bool manage, string id, CancellationToken cancellationToken)
    {
        while (true)
        {
            try
            {
                return admission.Admit(candidates, owner, manage, id);
            }
            catch (CapacityExhaustedException) when (admission.RoomIfFreed(candidates, owner) is { } helps && pools.TakeForEviction(helps) is { } pooled)
            {
                try
                {
                    await destruction.DestroyAsync(pooled, cancellationToken).ConfigureAwait(false);
                }
                finally
                {
                    pools.Evicted(pooled);
                }
            }
        }
    }

    /// <summary>
    /// Records and prepares the machine admitted with <paramref name="reservation"/> (a client's, or one for a warm pool) and
    /// adds it to the table. A failure gives back everything it held and leaves no record.
    /// </summary>
    internal async Task<Machine> PrepareAsync(AdmissionReservation reservation, string id, bool manage, int owner,
        IReadOnlyDictionary<string, string> labels, DateTimeOffset leaseExpiresAt, string? idempotencyKey, CancellationToken cancellationToken)
    {
        var template = reservation.Template;
        var backend = _backends[template.Type];
        var spec = MachineSpecs.Of(config, id, template, manage, reservation.Port, owner, labels);
        var now = time.GetUtcNow();
        IMachineInstance instance;
        try
        {
            // Recorded before anything is made: a crash from here on leaves a row that the next start cleans up.
            store.Save(new MachineRecord(id, template.Type, template.Id, manage, owner, reservation.Port, labels,
                now, leaseExpiresAt, PreparingState, null, spec.WorkDirectory, null, idempotencyKey, null));
            Directory.CreateDirectory(spec.WorkDirectory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            instance = await backend.PrepareAsync(spec, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            reservation.Release();
            MachineDestruction.RemoveWorkDirectory(spec.WorkDirectory);
            store.Delete(id);
            MachineLog.PrepareFailed(logger, template.Name, e);
            if (DiskFull.Is(e))
            {
                throw new StorageFullException($"no machine was made: the disk of state_dir ({config.Daemon.StateDirectory}) is full", e);
            }

            throw;
        }

        var machine = new Machine(id, template, manage, owner, reservation, labels, instance, spec.WorkDirectory,
            now, leaseExpiresAt, idempotencyKey);
        transitions.Save(machine);
        transitions.FollowPauses(machine);
        table.Add(machine);
        MachineLog.Prepared(logger, id, template.Name, manage, reservation.Port, owner);
        events.Publish(MachineEventTypes.Created, machine, MachineState.Prepared);
        return machine;
    }

    public IReadOnlyList<MachineView> List(Caller caller) => table.List(caller);

    public MachineView Get(string id, Caller caller) => table.Find(id, caller).View();

    /// <summary>
    /// Launches the machine; with <paramref name="waitForSsh"/> returns only once SSH presents a pinned host key.
    /// The launch itself is not undone when the client goes away; a delete or stop cancels the wait.
    /// </summary>
    public async Task<MachineView> BootAsync(string id, Caller caller, bool waitForSsh, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var machine = table.Find(id, caller);
        CancellationTokenSource boot;
        lock (machine.Sync)
        {
            MachineJobs.ThrowIfDeleting(machine);
            if (machine.IsRunningAndVerified)
            {
                // Already up and its SSH server seen (a machine from a warm pool, or a boot repeated): nothing to launch.
                return machine.View();
            }

            if (!machine.State.CanBoot())
            {
                throw new MachineStateConflictException(id, machine.State, "boot", $"machine {id} is {machine.State.ToWire()}: only a prepared or stopped machine can boot");
            }

            transitions.ToOrUndo(machine, MachineState.Booting, lastError: null);
            boot = CancellationTokenSource.CreateLinkedTokenSource(machine.Lifetime.Token);
            machine.BootCancellation = boot;
        }

        try
        {
            await jobs.RunAsync(machine, JobKind.Launch, async token =>
            {
                await machine.Instance.LaunchAsync(token).ConfigureAwait(false);
                transitions.Save(machine);
                if (machine.Instance is ILaunchReporting { LastLaunch: { } note })
                {
                    events.Publish(note.EventType, machine, detail: note.Detail);
                }
            }, boot.Token).ConfigureAwait(false);

            var exited = machine.Instance.Exited!;
            transitions.Watch(machine, exited);
            if (waitForSsh)
            {
                await WaitForSshAsync(machine, exited, timeout, boot.Token, cancellationToken).ConfigureAwait(false);
            }

            MarkRunning(machine, lastError: null);
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
            MarkRunning(machine, lastError: null);
            throw;
        }
        catch (WaitTimeoutException e)
        {
            // Still running, just not reachable yet: the client may wait again or delete it.
            MarkRunning(machine, e.Message);
            throw;
        }
        catch (FalkException e)
        {
            await jobs.FailAsync(machine, e.Message).ConfigureAwait(false);
            if (e is Ssh.SshEndpointTakenException)
            {
                // The launch may have ended first, because the intruder held its port: that end is only the symptom.
                transitions.TryTo(machine, s => s == MachineState.Failed, MachineState.Failed, e.Message);
            }

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

    private async Task WaitForSshAsync(Machine machine, Task<MachineExit> exited, TimeSpan timeout, CancellationToken boot, CancellationToken cancellationToken)
    {
        using var wait = CancellationTokenSource.CreateLinkedTokenSource(boot, cancellationToken);
        var endpoint = new Ssh.SshEndpoint(machine.SshTarget.Host, machine.SshTarget.Port, machine.Template.SshUser);
        var guard = machine.Instance is IProcessOwnership { ServesOwnSshPort: true } owner && System.Net.IPAddress.TryParse(endpoint.Host, out var address)
            ? new Ssh.SshListenerGuard(machine.Id, address, endpoint.Port, owner.OwnsProcess, () => owner.ListenerCandidates)
            : null;
        var key = await ssh.WaitAsync(endpoint, machine.PinnedHostKeys, timeout, exited, () =>
        {
            // Someone else's server on the port is named first: the machine's own launch may end because of it.
            guard?.ThrowIfTaken();
            ThrowIfExited(machine, exited);
        }, wait.Token).ConfigureAwait(false);
        lock (machine.Sync)
        {
            machine.ObservedHostKey = key;
            machine.SshVerifiedLaunch = exited;
            transitions.Save(machine);
        }

        events.Publish(MachineEventTypes.Ready, machine, detail: key.FingerprintSha256);
        if (machine.PinnedHostKeys.Count == 0)
        {
            MachineLog.UnverifiedHostKey(logger, machine.Id, key.FingerprintSha256);
        }
        else
        {
            MachineLog.SshReady(logger, machine.Id, key.FingerprintSha256);
        }
    }

    /// <summary>Checks that a running machine's SSH server presents a pinned key now (a pooled machine taken back after a restart).</summary>
    internal async Task VerifyAsync(Machine machine, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var exited = machine.Instance.Exited
            ?? throw new MachineStateConflictException(machine.Id, machine.View().State, "verify", $"machine {machine.Id} was never launched");
        await WaitForSshAsync(machine, exited, timeout, machine.Lifetime.Token, cancellationToken).ConfigureAwait(false);
    }

    private void MarkRunning(Machine machine, string? lastError) =>
        transitions.TryTo(machine, s => s == MachineState.Booting, MachineState.Running, lastError);

    private static void ThrowIfExited(Machine machine, Task<MachineExit> exited)
    {
        if (exited.IsCompletedSuccessfully)
        {
            var exit = exited.Result;
            throw new MachineFailedException(machine.Id, $"machine {machine.Id} ended while booting: {exit.Description}", exit.ExitCode, exit.OutputTail);
        }
    }

    /// <summary>Waits for a launched machine to stop by itself (the guest powers off, the process ends).</summary>
    public async Task<MachineView> WaitUntilStoppedAsync(string id, Caller caller, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var machine = table.Find(id, caller);
        Task<MachineExit>? exited;
        lock (machine.Sync)
        {
            MachineJobs.ThrowIfDeleting(machine);
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
            transitions.Exited(machine, exited);
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
        var machine = table.Find(id, caller);
        lock (machine.Sync)
        {
            MachineJobs.ThrowIfDeleting(machine);
            if (machine.State == MachineState.Stopped)
            {
                return machine.View();
            }

            if (!machine.State.CanStop())
            {
                throw new MachineStateConflictException(id, machine.State, "stop", $"machine {id} is {machine.State.ToWire()}: only a booting or running machine can stop");
            }

            transitions.ToOrUndo(machine, MachineState.Stopping, machine.LastError);
            machine.BootCancellation?.Cancel();
        }

        // The stop is finished even if the client goes away: a half-stopped machine helps nobody.
        await jobs.RunAsync(machine, JobKind.Stop, token => machine.Instance.StopAsync(grace, token), CancellationToken.None).ConfigureAwait(false);
        transitions.TryTo(machine, s => s == MachineState.Stopping, MachineState.Stopped, machine.LastError);
        return machine.View();
    }

    /// <summary>Stops the machine hard and removes everything made for it. Deleting an unknown id is not an error.</summary>
    public async Task DeleteAsync(string id, Caller caller, CancellationToken cancellationToken)
    {
        if (table.TryFind(id, caller) is { } machine)
        {
            await destruction.DestroyAsync(machine, cancellationToken).ConfigureAwait(false);
        }
    }

    public SshAccess GetSsh(string id, Caller caller) => Get(id, caller).Ssh;

    /// <summary>Sets the machine's lease to end <paramref name="seconds"/> from now.</summary>
    public MachineView RenewLease(string id, Caller caller, int seconds) => leases.Renew(table.Find(id, caller), seconds);

    /// <summary>
    /// A place among the event streams the caller follows, held until disposed: admins are not counted, anyone else
    /// may follow max_event_streams_per_uid at once.
    /// </summary>
    public IDisposable HoldEventStream(Caller caller) =>
        caller.IsAdmin
            ? PerUidSlots.Uncounted
            : _eventStreams.TryTake(caller.Uid) ?? throw new PeerLimitException("too-many-event-streams",
                $"uid {caller.Uid} already follows {_eventStreams.Limit} event streams (max_event_streams_per_uid): close one first", _eventStreams.Limit);

    /// <summary>Events the caller may see: its own machines', or all for admins.</summary>
    public IAsyncEnumerable<MachineEvent> SubscribeAsync(Caller caller, long? afterId, CancellationToken cancellationToken) =>
        events.SubscribeAsync(afterId, e => caller.IsAdmin || e.OwnerUid == caller.Uid, cancellationToken);

    /// <summary>Writes the machine's console to <paramref name="destination"/>; with follow, until the machine stops.</summary>
    public async Task CopyConsoleAsync(string id, Caller caller, Stream destination, bool follow, CancellationToken cancellationToken)
    {
        var machine = table.Find(id, caller);
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

    public Task<SnapshotInfo> CreateSnapshotAsync(string id, Caller caller, string name, CancellationToken cancellationToken) =>
        images.CreateSnapshotAsync(table.Find(id, caller), name, cancellationToken);

    public Task<IReadOnlyList<SnapshotInfo>> ListSnapshotsAsync(string id, Caller caller, CancellationToken cancellationToken) =>
        images.ListSnapshotsAsync(table.Find(id, caller), cancellationToken);

    public Task<MachineView> RestoreSnapshotAsync(string id, Caller caller, string name, CancellationToken cancellationToken) =>
        images.RestoreSnapshotAsync(table.Find(id, caller), name, cancellationToken);

    public Task DeleteSnapshotAsync(string id, Caller caller, string name, CancellationToken cancellationToken) =>
        images.DeleteSnapshotAsync(table.Find(id, caller), name, cancellationToken);

    /// <summary>
    /// Publishes a management machine's disk as its template's new image. A running guest is first asked to shut
    /// down (forced after <paramref name="grace"/>); the machine stays, stopped, until it is deleted.
    /// </summary>
    public async Task<CommitResult> CommitAsync(string id, Caller caller, TimeSpan grace, CancellationToken cancellationToken)
    {
        var machine = table.Find(id, caller);
        MachineImages.CommitSupport(machine);
        if (machine.View().State is MachineState.Running or MachineState.Paused)
        {
            await StopAsync(id, caller, grace, cancellationToken).ConfigureAwait(false);
        }

        return await images.CommitAsync(machine, cancellationToken).ConfigureAwait(false);
    }
}
