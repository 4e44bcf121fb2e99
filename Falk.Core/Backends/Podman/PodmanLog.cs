using Microsoft.Extensions.Logging;

namespace Falk.Core.Backends.Podman;

/// <summary>Log messages of the podman backend (event ids 5000–5099).</summary>
internal static partial class PodmanLog
{
    [LoggerMessage(5000, LogLevel.Warning, "Template {Template}: the command key is ignored by this podman backend (containers are made through the API; use memory, cpus, volumes, environment, devices and publish): {Command}")]
    public static partial void CommandIgnored(ILogger logger, string template, string command);

    [LoggerMessage(5001, LogLevel.Information, "Machine {MachineId}: container {ContainerId} created from {Image} ({ImageId}), port 22 on {Address}:{Port}")]
    public static partial void Created(ILogger logger, string machineId, string containerId, string image, string imageId, string address, int port);

    [LoggerMessage(5002, LogLevel.Information, "Machine {MachineId}: container {ContainerId} started")]
    public static partial void Started(ILogger logger, string machineId, string containerId);

    [LoggerMessage(5003, LogLevel.Information, "Machine {MachineId}: container {ContainerId} ended: {Description}")]
    public static partial void Ended(ILogger logger, string machineId, string containerId, string description);

    [LoggerMessage(5004, LogLevel.Information, "Machine {MachineId}: container {ContainerId} removed")]
    public static partial void Removed(ILogger logger, string machineId, string containerId);

    [LoggerMessage(5005, LogLevel.Information, "Machine {MachineId}: {KeyType} host key {Fingerprint} from image {ImageId}, verified at boot")]
    public static partial void HostKeyFromImage(ILogger logger, string machineId, string fingerprint, string keyType, string imageId);

    [LoggerMessage(5021, LogLevel.Information, "Machine {MachineId}: host key {Fingerprint} made for it, mounted at {Path} and verified at boot")]
    public static partial void HostKeyMadeForMachine(ILogger logger, string machineId, string fingerprint, string path);

    [LoggerMessage(5006, LogLevel.Warning, "Machine {MachineId}: image {ImageId} has no /etc/ssh/ssh_host_*_key.pub and the config names no host key: the key will be observed, not verified")]
    public static partial void NoHostKeyInImage(ILogger logger, string machineId, string imageId);

    [LoggerMessage(5007, LogLevel.Warning, "The podman API at {Socket} is unreachable ({Operation}): {Reason}")]
    public static partial void EngineUnreachable(ILogger logger, string socket, string operation, string reason);

    [LoggerMessage(5008, LogLevel.Information, "Machine {MachineId}: snapshot {Snapshot} committed as {ImageId}")]
    public static partial void SnapshotCommitted(ILogger logger, string machineId, string snapshot, string imageId);

    [LoggerMessage(5009, LogLevel.Information, "Machine {MachineId}: container replaced by {ContainerId} from snapshot {Snapshot}")]
    public static partial void SnapshotRestored(ILogger logger, string machineId, string containerId, string snapshot);

    [LoggerMessage(5010, LogLevel.Information, "Machine {MachineId}: template {Template} now runs {Reference} ({ImageId})")]
    public static partial void TemplateSwitched(ILogger logger, string machineId, string template, string reference, string imageId);

    [LoggerMessage(5011, LogLevel.Information, "Template {Template}: old image {Reference} removed")]
    public static partial void OldImageRemoved(ILogger logger, string template, string reference);

    [LoggerMessage(5012, LogLevel.Debug, "Template {Template}: old image {Reference} kept, still in use: {Reason}")]
    public static partial void OldImageKept(ILogger logger, string template, string reference, string reason);

    [LoggerMessage(5013, LogLevel.Warning, "Machine {MachineId}: the podman API went away while Falk waited for container {ContainerId}; watching again once it is back")]
    public static partial void WatchInterrupted(ILogger logger, string machineId, string containerId);

    [LoggerMessage(5015, LogLevel.Warning, "The podman event stream broke ({Reason}); reconnecting")]
    public static partial void EventsInterrupted(ILogger logger, string reason);

    [LoggerMessage(5014, LogLevel.Warning, "Machine {MachineId}: {Operation} failed: {Reason}")]
    public static partial void OperationFailed(ILogger logger, string machineId, string operation, string reason);

    [LoggerMessage(5016, LogLevel.Information, "Machine {MachineId}: container {ContainerId} taken back after restart ({Status})")]
    public static partial void TakenBack(ILogger logger, string machineId, string containerId, string status);

    [LoggerMessage(5017, LogLevel.Warning, "Machine {MachineId}: no container left after restart (recorded {RecordedState}); removing its snapshot images")]
    public static partial void GoneAfterRestart(ILogger logger, string machineId, string recordedState);

    [LoggerMessage(5018, LogLevel.Warning, "Machine {MachineId}: container {ContainerId} removed, it belongs to no recorded machine ({Reason})")]
    public static partial void OrphanContainerRemoved(ILogger logger, string machineId, string containerId, string reason);

    [LoggerMessage(5019, LogLevel.Warning, "Machine {MachineId}: snapshot image {Image} removed, it belongs to no recorded machine")]
    public static partial void OrphanImageRemoved(ILogger logger, string machineId, string image);

    [LoggerMessage(5020, LogLevel.Warning, "Removing leftovers of unrecorded machines failed: {Reason}")]
    public static partial void OrphanRemovalFailed(ILogger logger, string reason);
}
