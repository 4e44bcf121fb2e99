namespace Falk.Core.Machines;

/// <summary>The request itself is wrong (a bad name, a value out of range).</summary>
public sealed class InvalidRequestException(string field, string message)
    : FalkException("invalid-request", message)
{
    public string Field { get; } = field;
    public override string Title => "Invalid request";
    public override IReadOnlyDictionary<string, object?> Details => new Dictionary<string, object?> { ["field"] = Field };
}

public sealed class TemplateNotFoundException(string template)
    : FalkException("template-not-found", $"no template named '{template}' is configured")
{
    public override string Title => "Unknown template";
}

public sealed class MachineNotFoundException(string machineId)
    : FalkException("machine-not-found", $"no machine with id '{machineId}'")
{
    public override string Title => "Unknown machine";
}

/// <summary>The machine is not in a state that allows the operation.</summary>
public sealed class MachineStateConflictException(string machineId, MachineState state, string operation, string? reason = null)
    : FalkException("wrong-state", reason ?? $"machine {machineId} is {state.ToWire()}: cannot {operation}")
{
    public MachineState State { get; } = state;
    public override string Title => "Machine is in the wrong state";
    public override IReadOnlyDictionary<string, object?> Details => new Dictionary<string, object?>
    {
        ["machine_id"] = machineId,
        ["state"] = State.ToWire(),
    };
}

/// <summary>Out of machines or ports; the client should retry later.</summary>
public sealed class CapacityExhaustedException(string message, TimeSpan retryAfter)
    : FalkException("capacity-exhausted", message)
{
    public TimeSpan RetryAfter { get; } = retryAfter;
    public override string Title => "No capacity left";
}

/// <summary>The caller may not do this (not an allowed peer, or not an admin).</summary>
public sealed class AccessDeniedException(string message)
    : FalkException("access-denied", message)
{
    public override string Title => "Not allowed";
}

/// <summary>The machine's process or container ended or failed while Falk needed it.</summary>
public sealed class MachineFailedException(string machineId, string message, int? exitCode = null, string? outputTail = null, Exception? inner = null)
    : FalkException("machine-failed", message, inner)
{
    public int? ExitCode { get; } = exitCode;
    public string? OutputTail { get; } = outputTail;
    public override string Title => "Machine failed";
    public override IReadOnlyDictionary<string, object?> Details => new Dictionary<string, object?>
    {
        ["machine_id"] = machineId,
        ["exit_code"] = ExitCode,
        ["output_tail"] = OutputTail,
    };
}

/// <summary>A wait (for SSH, for the guest to stop) ran out of time.</summary>
public sealed class WaitTimeoutException(string message, string? lastError = null)
    : FalkException("wait-timeout", lastError is null ? message : $"{message}; last error: {lastError}")
{
    public string? LastError { get; } = lastError;
    public override string Title => "Timed out";
    public override IReadOnlyDictionary<string, object?> Details => new Dictionary<string, object?> { ["last_error"] = LastError };
}

/// <summary>A backend could not do its part (prepare command failed, engine refused).</summary>
public sealed class BackendOperationException(string message, Exception? inner = null)
    : FalkException("backend-failed", message, inner)
{
    public override string Title => "Backend operation failed";
}

/// <summary>The backend that serves the template cannot be reached right now.</summary>
public sealed class BackendUnavailableException(string message, TimeSpan retryAfter, Exception? inner = null)
    : FalkException("backend-unavailable", message, inner)
{
    public TimeSpan RetryAfter { get; } = retryAfter;
    public override string Title => "Backend unavailable";
}

public sealed class SnapshotNotFoundException(string machineId, string snapshot)
    : FalkException("snapshot-not-found", $"machine {machineId} has no snapshot named '{snapshot}'")
{
    public override string Title => "Unknown snapshot";
}

/// <summary>The machine's backend cannot do this at all (e.g. snapshots of a custom machine).</summary>
public sealed class NotSupportedByBackendException(string machineId, string backend, string operation)
    : FalkException("not-supported", $"machine {machineId} is a {backend} machine, which cannot {operation}")
{
    public override string Title => "Not supported by this backend";
}

/// <summary>A second management machine for a template, or a commit of a machine that is not one.</summary>
public sealed class ManagementConflictException(string message)
    : FalkException("management-conflict", message)
{
    public override string Title => "Management session conflict";
}

/// <summary>A snapshot name that is already taken.</summary>
public sealed class SnapshotExistsException(string machineId, string snapshot)
    : FalkException("snapshot-exists", $"machine {machineId} already has a snapshot named '{snapshot}'")
{
    public override string Title => "Snapshot exists";
}

/// <summary>A machine has as many snapshots as <c>max_snapshots_per_machine</c> allows.</summary>
public sealed class SnapshotLimitException(string machineId, int limit)
    : FalkException("snapshot-limit", $"machine {machineId} already has {limit} snapshots (max_snapshots_per_machine): delete one first")
{
    public override string Title => "Too many snapshots";
    public override IReadOnlyDictionary<string, object?> Details => new Dictionary<string, object?> { ["machine_id"] = machineId, ["limit"] = limit };
}

/// <summary>
/// A uid holds as many connections or event streams as its limit allows (<c>max_connections_per_uid</c>,
/// <c>max_event_streams_per_uid</c>); other uids are not affected.
/// </summary>
public sealed class PeerLimitException(string code, string message, int limit)
    : FalkException(code, message)
{
    public int Limit { get; } = limit;
    public override string Title => "Too many at once for this user";
    public override IReadOnlyDictionary<string, object?> Details => new Dictionary<string, object?> { ["limit"] = Limit };
}

/// <summary>The disk that holds <c>state_dir</c> is full: what was asked was not done, and nothing changed.</summary>
public sealed class StorageFullException(string message, Exception? inner = null)
    : FalkException("storage-full", message, inner)
{
    public override string Title => "Storage full";
}
