using Microsoft.Extensions.Logging;

namespace Falk.Core.Backends.Lxd;

/// <summary>Log messages of the LXD/Incus backend (event ids 7000–7099).</summary>
internal static partial class LxdLog
{
    [LoggerMessage(7000, LogLevel.Warning, "Template {Template}: the command key is ignored by the {Type} backend (instances are made through the API; use profiles, memory, cpus, storage_pool and config): {Command}")]
    public static partial void CommandIgnored(ILogger logger, string template, string type, string command);

    [LoggerMessage(7001, LogLevel.Information, "Machine {MachineId}: instance created from image {Image} ({Fingerprint}), SSH {Ssh}")]
    public static partial void Created(ILogger logger, string machineId, string image, string fingerprint, string ssh);

    [LoggerMessage(7002, LogLevel.Information, "Machine {MachineId}: instance started")]
    public static partial void Started(ILogger logger, string machineId);

    [LoggerMessage(7003, LogLevel.Information, "Machine {MachineId}: instance stopped: {Description}")]
    public static partial void Ended(ILogger logger, string machineId, string description);

    [LoggerMessage(7004, LogLevel.Information, "Machine {MachineId}: instance deleted")]
    public static partial void Deleted(ILogger logger, string machineId);

    [LoggerMessage(7005, LogLevel.Information, "Machine {MachineId}: pinned the {KeyType} host key {Fingerprint} read from image {Image}")]
    public static partial void HostKeyFromImage(ILogger logger, string machineId, string fingerprint, string keyType, string image);

    [LoggerMessage(7006, LogLevel.Warning, "Machine {MachineId}: image {Image} has no /etc/ssh/ssh_host_*_key.pub and the template pins no key: the host key will not be verified")]
    public static partial void NoHostKeyInImage(ILogger logger, string machineId, string image);

    [LoggerMessage(7007, LogLevel.Warning, "The {Product} API at {Socket} is unreachable ({Operation}): {Reason}")]
    public static partial void DaemonUnreachable(ILogger logger, string product, string socket, string operation, string reason);

    [LoggerMessage(7008, LogLevel.Information, "Machine {MachineId}: snapshot {Snapshot} made (stateful: {Stateful})")]
    public static partial void SnapshotMade(ILogger logger, string machineId, string snapshot, bool stateful);

    [LoggerMessage(7009, LogLevel.Information, "Machine {MachineId}: restored to snapshot {Snapshot}")]
    public static partial void SnapshotRestored(ILogger logger, string machineId, string snapshot);

    [LoggerMessage(7010, LogLevel.Information, "Machine {MachineId}: template {Template} now runs image {Fingerprint} (version {Version}, alias {Alias})")]
    public static partial void TemplateSwitched(ILogger logger, string machineId, string template, string fingerprint, string version, string alias);

    [LoggerMessage(7011, LogLevel.Information, "Template {Template}: old image {Fingerprint} removed")]
    public static partial void OldImageRemoved(ILogger logger, string template, string fingerprint);

    [LoggerMessage(7012, LogLevel.Warning, "Machine {MachineId}: {Operation} failed: {Reason}")]
    public static partial void OperationFailed(ILogger logger, string machineId, string operation, string reason);

    [LoggerMessage(7013, LogLevel.Information, "Machine {MachineId}: instance taken back after restart ({Status})")]
    public static partial void TakenBack(ILogger logger, string machineId, string status);

    [LoggerMessage(7014, LogLevel.Warning, "Machine {MachineId}: no instance left after restart (recorded {RecordedState})")]
    public static partial void GoneAfterRestart(ILogger logger, string machineId, string recordedState);

    [LoggerMessage(7015, LogLevel.Warning, "Machine {MachineId}: instance {Instance} deleted, it belongs to no recorded machine ({Reason})")]
    public static partial void OrphanDeleted(ILogger logger, string machineId, string instance, string reason);

    [LoggerMessage(7016, LogLevel.Warning, "Removing leftovers of unrecorded {Type} machines failed: {Reason}")]
    public static partial void OrphanRemovalFailed(ILogger logger, string type, string reason);

    [LoggerMessage(7017, LogLevel.Warning, "Machine {MachineId}: the {Product} API went away while Falk watched the instance; watching again once it is back")]
    public static partial void WatchInterrupted(ILogger logger, string machineId, string product);
}
