using Microsoft.Extensions.Logging;

namespace Falk.Core.Machines;

/// <summary>Log messages of the machine service (event ids 2000–2099). Every line names the machine.</summary>
internal static partial class MachineLog
{
    [LoggerMessage(2000, LogLevel.Information, "Machine {MachineId} of template {Template} prepared (manage={Manage}, port {Port}, owner {Owner})")]
    public static partial void Prepared(ILogger logger, string machineId, string template, bool manage, int port, int owner);

    [LoggerMessage(2001, LogLevel.Information, "Machine {MachineId} is {State}")]
    public static partial void StateChanged(ILogger logger, string machineId, string state);

    [LoggerMessage(2002, LogLevel.Warning, "Machine {MachineId} failed: {Error}")]
    public static partial void Failed(ILogger logger, string machineId, string error);

    [LoggerMessage(2003, LogLevel.Information, "Machine {MachineId} deleted")]
    public static partial void Deleted(ILogger logger, string machineId);

    [LoggerMessage(2004, LogLevel.Error, "Machine {MachineId} could not be cleaned up")]
    public static partial void CleanupFailed(ILogger logger, string machineId, Exception exception);

    [LoggerMessage(2005, LogLevel.Warning, "Machine {MachineId}: SSH answers with host key {Fingerprint}: observed, not verified (no host key from config or image)")]
    public static partial void UnverifiedHostKey(ILogger logger, string machineId, string fingerprint);

    [LoggerMessage(2006, LogLevel.Information, "Machine {MachineId}: SSH ready with host key {Fingerprint} (verified)")]
    public static partial void SshReady(ILogger logger, string machineId, string fingerprint);

    [LoggerMessage(2007, LogLevel.Information, "Machine {MachineId} ended: {Description}")]
    public static partial void Exited(ILogger logger, string machineId, string description);

    [LoggerMessage(2008, LogLevel.Warning, "Preparing a machine of template {Template} failed")]
    public static partial void PrepareFailed(ILogger logger, string template, Exception exception);

    [LoggerMessage(2010, LogLevel.Information, "Machine {MachineId}: snapshot {Snapshot} taken")]
    public static partial void SnapshotTaken(ILogger logger, string machineId, string snapshot);

    [LoggerMessage(2011, LogLevel.Information, "Machine {MachineId}: snapshot {Snapshot} restored")]
    public static partial void SnapshotRestored(ILogger logger, string machineId, string snapshot);

    [LoggerMessage(2012, LogLevel.Information, "Machine {MachineId}: committed as version {Version} of template {Template}")]
    public static partial void Committed(ILogger logger, string machineId, string template, string version);

    [LoggerMessage(2013, LogLevel.Warning, "Machine {MachineId}: lease expired at {ExpiredAt:O}; destroying it")]
    public static partial void LeaseExpired(ILogger logger, string machineId, DateTimeOffset expiredAt);

    [LoggerMessage(2014, LogLevel.Information, "Shutting down: leaving {Count} machines running for the next start (on_shutdown = keep)")]
    public static partial void KeepingAll(ILogger logger, int count);

    [LoggerMessage(2015, LogLevel.Information, "Machine {MachineId} taken back after restart: {State}, port {Port}")]
    public static partial void Reattached(ILogger logger, string machineId, string state, int port);

    [LoggerMessage(2016, LogLevel.Information, "Machine {MachineId} (recorded {State}) was gone after restart; its leftovers are removed")]
    public static partial void CleanedUpAfterRestart(ILogger logger, string machineId, string state);

    [LoggerMessage(2017, LogLevel.Warning, "Orphan {What} removed: {Where}")]
    public static partial void OrphanRemoved(ILogger logger, string what, string where);

    [LoggerMessage(2018, LogLevel.Error, "Machine {MachineId} of template {Template} ({Type}) cannot be recovered: the template or its backend is no longer configured; its record is kept")]
    public static partial void CannotRecover(ILogger logger, string machineId, string template, string type);

    [LoggerMessage(2019, LogLevel.Information, "Machine {MachineId}: snapshot {Snapshot} deleted")]
    public static partial void SnapshotDeleted(ILogger logger, string machineId, string snapshot);

    [LoggerMessage(2009, LogLevel.Information, "Shutting down: destroying {Count} machines")]
    public static partial void DestroyingAll(ILogger logger, int count);

    [LoggerMessage(2020, LogLevel.Error, "A lease reaper round failed; the next one runs in a second")]
    public static partial void ReaperRoundFailed(ILogger logger, Exception exception);

    [LoggerMessage(2021, LogLevel.Critical, "{What} cannot go on; falkd stops with a failure status so that its supervisor restarts it")]
    public static partial void Unrecoverable(ILogger logger, string what, Exception exception);

    [LoggerMessage(2022, LogLevel.Error, "Machine {MachineId}: watching for its end failed; it is marked failed")]
    public static partial void ExitWatchFailed(ILogger logger, string machineId, Exception exception);
}
