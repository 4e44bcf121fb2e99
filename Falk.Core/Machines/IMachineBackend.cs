using Falk.Core.Config;
using Falk.Core.Ssh;

namespace Falk.Core.Machines;

/// <summary>Everything a backend is told about a machine it is asked to prepare.</summary>
/// <param name="InstanceId">Identifies this daemon (its state folder) among others on the host; labels and markers carry it.</param>
/// <param name="WorkDirectory">
/// A folder of the machine's own under <c>state_dir</c>, made before prepare and removed after cleanup:
/// the place for sockets, pid files, the console log and per-run files.
/// </param>
public sealed record MachineSpec(
    string MachineId,
    TemplateDefinition Template,
    bool Manage,
    int SshPort,
    int OwnerUid,
    IReadOnlyDictionary<string, string> Labels,
    string WorkDirectory,
    string InstanceId)
{
    /// <summary>Where backends that write a console log (serial port, launch output) put it.</summary>
    public string ConsoleLogPath => Path.Combine(WorkDirectory, "console.log");

    /// <summary>The most a console log Falk writes may take on disk (with its rotated older part).</summary>
    public long ConsoleMaxBytes { get; init; } = DaemonOptions.DefaultConsoleMaxBytes;
}

/// <summary>A point-in-time snapshot of a machine.</summary>
/// <param name="IncludesMemory">True for a live snapshot that also holds the running guest's memory.</param>
public sealed record SnapshotInfo(string Name, DateTimeOffset CreatedAt, long? SizeBytes, bool IncludesMemory);

/// <summary>What a commit published: the template's new image version.</summary>
public sealed record CommitResult(string Version);

/// <summary>Where a machine's SSH server answers.</summary>
public sealed record SshTarget(string Host, int Port);

/// <summary>How a launched machine ended.</summary>
public sealed record MachineExit(int? ExitCode, string Description, string OutputTail);

/// <summary>
/// The seam between the machine service and a kind of machine (custom commands, podman, QEMU …).
/// A new backend is a folder with one implementation of this and one registration line.
/// </summary>
public interface IMachineBackend
{
    /// <summary>The <c>type =</c> of the templates it serves.</summary>
    string Type { get; }

    /// <summary>Makes what the machine needs before it can boot (copy, container, overlay). Undone by <see cref="IMachineInstance.CleanupAsync"/>.</summary>
    Task<IMachineInstance> PrepareAsync(MachineSpec spec, CancellationToken cancellationToken);

    /// <summary>
    /// After a daemon restart: takes back a machine recorded with <paramref name="handle"/> in <paramref name="recordedState"/>
    /// (null when the daemon died during prepare). Returns the instance and whether its guest runs; or, when the machine
    /// cannot be taken back (its process or container is gone, or prepare never finished), removes whatever is left of
    /// it and returns null.
    /// </summary>
    Task<ReattachedMachine?> ReattachAsync(MachineSpec spec, string? handle, MachineState? recordedState, CancellationToken cancellationToken);

    /// <summary>Removes what this daemon instance made for machines it has no record of (containers, processes, overlays).</summary>
    Task RemoveOrphansAsync(IReadOnlySet<string> knownMachineIds, CancellationToken cancellationToken);

    /// <summary>
    /// What a management machine of <paramref name="definition"/> edits. Templates with the same scope share the rule of
    /// one management machine at a time (two templates on one base image edit the same image). By default the template's
    /// section (sections of a pool share a name, not a scope).
    /// </summary>
    string ManagementScope(TemplateDefinition definition) => definition.Id;
}

/// <summary>A machine taken back after a restart.</summary>
public sealed record ReattachedMachine(IMachineInstance Instance, bool Running);

/// <summary>One prepared machine of a backend. The service calls it one operation at a time.</summary>
public interface IMachineInstance
{
    /// <summary>Host keys the backend learned itself (e.g. read from an image); empty to use the template's.</summary>
    IReadOnlyList<HostKey> DiscoveredHostKeys => [];

    /// <summary>Where <see cref="DiscoveredHostKeys"/> come from: a <see cref="HostKeySources"/> value.</summary>
    string DiscoveredHostKeySource => HostKeySources.Image;

    /// <summary>
    /// Where SSH answers when the backend learns it only at launch (an LXD instance's own address with
    /// <c>ssh_host = __dynamic__</c>); null for the template's <c>ssh_host</c> and the machine's port.
    /// </summary>
    SshTarget? SshTarget => null;

    /// <summary>
    /// The backend's record of what it made (pid and start time, container id, overlay path …), JSON. The service
    /// stores it after prepare, launch, restore and commit, and hands it to <see cref="IMachineBackend.ReattachAsync"/>.
    /// </summary>
    string? Handle { get; }

    /// <summary>Starts the machine. Returns once it is launched (not once SSH answers).</summary>
    Task LaunchAsync(CancellationToken cancellationToken);

    /// <summary>Completes when the launched machine stops by itself or is stopped; null before the first launch.</summary>
    Task<MachineExit>? Exited { get; }

    /// <summary>Asks the guest to shut down, waits up to <paramref name="grace"/>, then forces it off. Returns once it is off.</summary>
    Task StopAsync(TimeSpan grace, CancellationToken cancellationToken);

    /// <summary>Forces the machine off at once. Idempotent; a machine that never ran is fine.</summary>
    Task KillAsync(CancellationToken cancellationToken);

    /// <summary>Removes everything <see cref="IMachineBackend.PrepareAsync"/> made. Idempotent.</summary>
    Task CleanupAsync(CancellationToken cancellationToken);

    /// <summary>
    /// True when <see cref="CleanupAsync"/> also ends a running machine, at no more cost than on a stopped one (podman's
    /// forced removal): a delete then leaves out the separate <see cref="KillAsync"/>, which would cost an engine round
    /// trip and a wait for the exit before the same removal.
    /// </summary>
    bool CleanupEndsRunningMachine => false;

    /// <summary>The last lines of the machine's output, for error messages.</summary>
    string OutputTail();

    /// <summary>
    /// Writes the console (serial log, container output) to <paramref name="destination"/>. With
    /// <paramref name="follow"/> it keeps writing new output until the machine stops or the token is cancelled.
    /// </summary>
    Task CopyConsoleAsync(Stream destination, bool follow, CancellationToken cancellationToken);
}

/// <summary>A machine whose state can be saved and brought back. The service calls it with the machine's operation lock held.</summary>
public interface ISnapshotSupport
{
    /// <summary>Saves the machine as <paramref name="name"/> (live, with memory, if it runs and the backend can).</summary>
    Task<SnapshotInfo> CreateSnapshotAsync(string name, CancellationToken cancellationToken);

    Task<IReadOnlyList<SnapshotInfo>> ListSnapshotsAsync(CancellationToken cancellationToken);

    /// <summary>Brings the machine back to <paramref name="name"/>, keeping its id and SSH port.</summary>
    Task RestoreSnapshotAsync(string name, CancellationToken cancellationToken);

    /// <summary>Removes the snapshot <paramref name="name"/> and what it holds; the machine itself is not changed.</summary>
    Task DeleteSnapshotAsync(string name, CancellationToken cancellationToken);
}

/// <summary>
/// A machine whose backend knows its processes (custom: the launch's session and marks; QEMU: its process), so readiness
/// can check that the process listening on the machine's SSH port is one of them (<see cref="Ssh.SshListenerGuard"/>).
/// Not for backends whose port is served by an engine's forwarder (podman, LXD).
/// </summary>
public interface IProcessOwnership
{
    /// <summary>False when the template says the port is served from outside the machine's processes (a custom launch that hands it to a container engine).</summary>
    bool ServesOwnSshPort { get; }

    bool OwnsProcess(int pid);

    /// <summary>
    /// The machine's processes most likely to hold its SSH listener (QEMU; a custom launch's leader), looked at before
    /// every process's descriptors are.
    /// </summary>
    IEnumerable<int> ListenerCandidates { get; }
}

/// <summary>A machine whose guest can be paused from outside Falk (a QEMU monitor's <c>stop</c>) and resumed again.</summary>
public interface IPauseReporting
{
    /// <summary>Whether the launched guest is paused from outside now.</summary>
    bool IsPaused { get; }

    /// <summary>Raised with true when the guest is paused from outside, false when it runs again.</summary>
    event EventHandler<bool>? PausedChanged;
}

/// <summary>A machine whose launch can go more than one way (a QEMU guest resumed from a saved state, or booted cold when that failed).</summary>
public interface ILaunchReporting
{
    /// <summary>How the last launch went, for the event stream; null when there is nothing to tell.</summary>
    LaunchNote? LastLaunch { get; }
}

/// <summary>An event about a launch: its <see cref="MachineEventTypes"/> type and what to tell with it.</summary>
public sealed record LaunchNote(string EventType, string Detail);

/// <summary>A management machine whose disk can become the template's new image.</summary>
public interface ICommitSupport
{
    /// <summary>
    /// Publishes the (stopped) machine's disk as the template's new image version and switches the template to it
    /// atomically. A failure or crash part way leaves the previous version in force.
    /// </summary>
    Task<CommitResult> CommitAsync(CancellationToken cancellationToken);
}
