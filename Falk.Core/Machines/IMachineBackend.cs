using Falk.Core.Config;
using Falk.Core.Ssh;

namespace Falk.Core.Machines;

/// <summary>Everything a backend is told about a machine it is asked to prepare.</summary>
public sealed record MachineSpec(
    string MachineId,
    TemplateDefinition Template,
    bool Manage,
    int SshPort,
    int OwnerUid,
    IReadOnlyDictionary<string, string> Labels);

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
}

/// <summary>One prepared machine of a backend. The service calls it one operation at a time.</summary>
public interface IMachineInstance
{
    /// <summary>Host keys the backend learned itself (e.g. read from an image); empty to use the template's.</summary>
    IReadOnlyList<HostKey> DiscoveredHostKeys => [];

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

    /// <summary>The last lines of the machine's output, for error messages.</summary>
    string OutputTail();
}
