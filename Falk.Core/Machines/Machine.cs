using Falk.Core.Config;
using Falk.Core.Ssh;
using Falk.Core.State;

namespace Falk.Core.Machines;

/// <summary>
/// One machine the daemon owns. Its state and last error are written only by <see cref="MachineTransitions"/>, under
/// <see cref="Sync"/>; <see cref="Operation"/>, <see cref="Lifetime"/> and <see cref="Deletion"/> are the job slot, the
/// delete's cancellation and the running delete, taken only through <see cref="MachineJobs"/> and
/// <see cref="MachineDestruction"/>.
/// </summary>
public sealed class Machine
{
    internal Machine(string id, TemplateDefinition template, bool manage, int ownerUid, AdmissionReservation reservation,
        IReadOnlyDictionary<string, string> labels, IMachineInstance instance, string workDirectory, DateTimeOffset createdAt,
        DateTimeOffset leaseExpiresAt, string? idempotencyKey = null)
    {
        IdempotencyKey = idempotencyKey;
        LeaseExpiresAt = leaseExpiresAt;
        WorkDirectory = workDirectory;
        Id = id;
        Template = template;
        Manage = manage;
        OwnerUid = ownerUid;
        Reservation = reservation;
        Labels = labels;
        Instance = instance;
        CreatedAt = createdAt;
        StateChangedAt = createdAt;
        PinnedHostKeys = instance.DiscoveredHostKeys.Count > 0 ? instance.DiscoveredHostKeys : template.KnownHostKeys;
        HostKeySource = instance.DiscoveredHostKeys.Count > 0 ? instance.DiscoveredHostKeySource
            : template.KnownHostKeys.Count > 0 ? HostKeySources.Config
            : HostKeySources.None;
    }

    public string Id { get; }

    public TemplateDefinition Template { get; }

    public bool Manage { get; }

    /// <summary>Who the machine belongs to; <see cref="Caller.Daemon"/> while it waits in a warm pool, the client's once handed out.</summary>
    public int OwnerUid { get; internal set; }

    public int SshPort => Reservation.Port;

    public IReadOnlyDictionary<string, string> Labels { get; internal set; }

    /// <summary>When a client got it: when it was made, or, for a machine from a warm pool, when it was handed out.</summary>
    public DateTimeOffset CreatedAt { get; internal set; }

    internal IMachineInstance Instance { get; }

    /// <summary>Where SSH answers: what the backend learned at launch, else the template's host and the machine's port.</summary>
    internal SshTarget SshTarget => Instance.SshTarget ?? new SshTarget(Template.SshHost, SshPort);

    internal string WorkDirectory { get; }

    /// <summary>What the machine holds of the daemon's capacity, given back when it is destroyed.</summary>
    internal AdmissionReservation Reservation { get; }

    /// <summary>The client's key for the create that made this machine, if it gave one.</summary>
    internal string? IdempotencyKey { get; set; }

    /// <summary>Whether the machine waits in (or is being made for) a warm pool: the daemon owns it and no client has it yet.</summary>
    internal bool IsPooled => OwnerUid == Caller.Daemon.Uid && !Manage;

    /// <summary>The keys the SSH server must present: learned by the backend, else the template's.</summary>
    internal IReadOnlyList<HostKey> PinnedHostKeys { get; }

    internal string HostKeySource { get; }

    internal Lock Sync { get; } = new();

    internal SemaphoreSlim Operation { get; } = new(1, 1);

    internal CancellationTokenSource Lifetime { get; } = new();

    // The fields below are guarded by Sync.
    internal MachineState State { get; private set; } = MachineState.Prepared;

    internal DateTimeOffset StateChangedAt { get; private set; }

    internal string? LastError { get; private set; }

    internal DateTimeOffset LeaseExpiresAt { get; set; }

    /// <summary>Set once the expiry was logged and published, so a machine whose cleanup keeps failing is not reported every second.</summary>
    internal bool LeaseExpiryReported { get; set; }

    internal bool IsBeingDeleted
    {
        get
        {
            lock (Sync)
            {
                return Deletion is not null;
            }
        }
    }

    internal HostKey? ObservedHostKey { get; set; }

    /// <summary>The launch (its <see cref="IMachineInstance.Exited"/>) whose SSH server was seen presenting a pinned key; null until one was.</summary>
    internal Task<MachineExit>? SshVerifiedLaunch { get; set; }

    /// <summary>Running, and its current launch's SSH server was seen presenting a pinned (or observed) key: nothing to boot or wait for.</summary>
    internal bool IsRunningAndVerified => State == MachineState.Running && SshVerifiedLaunch is { } launch && ReferenceEquals(launch, Instance.Exited);

    /// <summary>Set once the machine's record is deleted: nothing saves it again.</summary>
    internal bool Removed { get; set; }

    internal CancellationTokenSource? BootCancellation { get; set; }

    internal TaskCompletionSource? Deletion { get; set; }

    internal void SetState(MachineState state, string? lastError, DateTimeOffset now)
    {
        State = state;
        LastError = lastError;
        StateChangedAt = now;
    }

    /// <summary>The whole record the store keeps of this machine, as it is now.</summary>
    internal MachineRecord ToRecord()
    {
        lock (Sync)
        {
            return new MachineRecord(Id, Template.Type, Template.Id, Manage, OwnerUid, SshPort, Labels, CreatedAt, LeaseExpiresAt,
                State.ToWire(), LastError, WorkDirectory, Instance.Handle, IdempotencyKey, ObservedHostKey?.PublicKeyLine);
        }
    }

    /// <summary>A consistent copy of the machine for callers outside the lock.</summary>
    internal MachineView View()
    {
        lock (Sync)
        {
            var knownKey = ObservedHostKey is not null && (PinnedHostKeys.Count == 0 || PinnedHostKeys.Contains(ObservedHostKey))
                ? ObservedHostKey
                : PinnedHostKeys.Count > 0 ? PinnedHostKeys[0] : null;
            var target = SshTarget;
            var ssh = new SshAccess(Template.SshUser, target.Host, target.Port, knownKey,
                Verified: PinnedHostKeys.Count > 0,
                Source: PinnedHostKeys.Count > 0 ? HostKeySource : knownKey is null ? HostKeySources.None : HostKeySources.Observed);
            return new MachineView(Id, Template.Name, State, Manage, OwnerUid, CreatedAt, StateChangedAt, LeaseExpiresAt, Labels, ssh, LastError);
        }
    }
}

/// <summary>Where the host key given to clients comes from.</summary>
public static class HostKeySources
{
    public const string Config = "config";
    public const string Image = "image";

    /// <summary>Made for this one machine at create (podman): no other machine's guest holds it.</summary>
    public const string Machine = "machine";
    public const string Observed = "observed";
    public const string None = "none";
}

/// <summary>A read-only copy of a machine's state.</summary>
public sealed record MachineView(
    string Id,
    string Template,
    MachineState State,
    bool Manage,
    int OwnerUid,
    DateTimeOffset CreatedAt,
    DateTimeOffset StateChangedAt,
    DateTimeOffset LeaseExpiresAt,
    IReadOnlyDictionary<string, string> Labels,
    SshAccess Ssh,
    string? LastError);

/// <summary>How to reach a machine over SSH, and which host key to trust.</summary>
/// <param name="Verified">True when the key is pinned (config or image) and readiness checks it; false when it is only what the server showed.</param>
public sealed record SshAccess(string User, string Host, int Port, HostKey? KnownHostKey, bool Verified, string Source);
