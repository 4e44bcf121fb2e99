using Microsoft.Extensions.Logging;

namespace Falk.Core.Backends.Qemu;

/// <summary>Log messages of the QEMU backend (event ids 6000–6099).</summary>
internal static partial class QemuLog
{
    [LoggerMessage(6000, LogLevel.Information, "Machine {MachineId}: overlay {Overlay} on image {Backing}")]
    public static partial void OverlayCreated(ILogger logger, string machineId, string overlay, string backing);

    [LoggerMessage(6001, LogLevel.Information, "Machine {MachineId}: QEMU started, pid {Pid}: {Command}")]
    public static partial void Launched(ILogger logger, string machineId, int pid, string command);

    [LoggerMessage(6002, LogLevel.Information, "Machine {MachineId}: QMP connected on {Socket}")]
    public static partial void QmpConnected(ILogger logger, string machineId, string socket);

    [LoggerMessage(6003, LogLevel.Debug, "Machine {MachineId}: QMP event {Event} {Data}")]
    public static partial void QmpEvent(ILogger logger, string machineId, string @event, string data);

    [LoggerMessage(6004, LogLevel.Information, "Machine {MachineId}: asking the guest to power down (up to {GraceSeconds} s)")]
    public static partial void PoweringDown(ILogger logger, string machineId, double graceSeconds);

    [LoggerMessage(6005, LogLevel.Warning, "Machine {MachineId}: the guest did not power down in time: {Fallback}")]
    public static partial void PowerdownTimedOut(ILogger logger, string machineId, string fallback);

    [LoggerMessage(6006, LogLevel.Information, "Machine {MachineId}: {Description}")]
    public static partial void Exited(ILogger logger, string machineId, string description);

    [LoggerMessage(6007, LogLevel.Debug, "Machine {MachineId}: QEMU: {Line}")]
    public static partial void Output(ILogger logger, string machineId, string line);

    [LoggerMessage(6008, LogLevel.Information, "Machine {MachineId}: snapshot {Snapshot} {Action} ({Mode})")]
    public static partial void Snapshot(ILogger logger, string machineId, string snapshot, string action, string mode);

    [LoggerMessage(6009, LogLevel.Information, "Template image {BaseImage}: version {Version} is current ({Path}), from machine {MachineId}")]
    public static partial void VersionCommitted(ILogger logger, string baseImage, string version, string path, string machineId);

    [LoggerMessage(6010, LogLevel.Information, "Template image {BaseImage}: removed version {Path}, which no machine uses")]
    public static partial void VersionRemoved(ILogger logger, string baseImage, string path);

    [LoggerMessage(6011, LogLevel.Warning, "Template image {BaseImage}: removed {Path}, left by a commit that did not finish")]
    public static partial void PartialRemoved(ILogger logger, string baseImage, string path);

    [LoggerMessage(6012, LogLevel.Warning, "Machine {MachineId}: the guest shut down ({Reason}) but QEMU kept running; quitting it")]
    public static partial void QuitAfterShutdown(ILogger logger, string machineId, string reason);

    [LoggerMessage(6013, LogLevel.Warning, "Template image {BaseImage}: could not remove {Path}")]
    public static partial void RemoveFailed(ILogger logger, string baseImage, string path, Exception exception);

    [LoggerMessage(6014, LogLevel.Information, "Machine {MachineId}: took back QEMU pid {Pid}, QMP answers on {Socket}")]
    public static partial void Reattached(ILogger logger, string machineId, int pid, string socket);

    [LoggerMessage(6015, LogLevel.Warning, "Machine {MachineId}: QEMU pid {Pid} lives but its QMP socket does not answer ({Reason}); killing it")]
    public static partial void ReattachFailed(ILogger logger, string machineId, int pid, string reason);

    [LoggerMessage(6016, LogLevel.Warning, "Killed QEMU pid {Pid} of unknown machine {MachineId}")]
    public static partial void OrphanKilled(ILogger logger, string machineId, int pid);

    [LoggerMessage(6017, LogLevel.Warning, "Removed overlay {Overlay} of unknown machine {MachineId}")]
    public static partial void OrphanOverlayRemoved(ILogger logger, string machineId, string overlay);

    [LoggerMessage(6018, LogLevel.Warning, "Machine {MachineId}: killed QEMU pid {Pid}, which was not the recorded process")]
    public static partial void StrayKilled(ILogger logger, string machineId, int pid);

    [LoggerMessage(6019, LogLevel.Information, "Machine {MachineId}: guest {Change}")]
    public static partial void PauseChanged(ILogger logger, string machineId, string change);

    [LoggerMessage(6020, LogLevel.Information, "Template image {BaseImage}: removed saved guest file {Path}")]
    public static partial void ResumeStateRemoved(ILogger logger, string baseImage, string path);

    [LoggerMessage(6021, LogLevel.Information, "Template image {Version}: saving a running guest for resumes (QEMU machine {SaverId}, port {Port})")]
    public static partial void ResumeStateSaving(ILogger logger, string version, string saverId, int port);

    [LoggerMessage(6022, LogLevel.Information, "Template image {Version}: saved a running guest in {State} ({Bytes} bytes) in {Seconds:0.00} s")]
    public static partial void ResumeStateSaved(ILogger logger, string version, string state, long bytes, double seconds);

    [LoggerMessage(6023, LogLevel.Warning, "Template image {Version}: could not save a running guest: {Reason}")]
    public static partial void ResumeStateFailed(ILogger logger, string version, string reason);

    [LoggerMessage(6024, LogLevel.Information, "Machine {MachineId}: resumed from {State} in {Seconds:0.000} s")]
    public static partial void Resumed(ILogger logger, string machineId, string state, double seconds);

    [LoggerMessage(6025, LogLevel.Warning, "Machine {MachineId}: resume failed, booting cold: {Reason}")]
    public static partial void ResumeFellBack(ILogger logger, string machineId, string reason);

    [LoggerMessage(6050, LogLevel.Warning, "QEMU runs as the daemon's own user (uid {Uid}), not as qemu_user '{User}': falkd is not root and cannot switch users, or qemu_user is root")]
    public static partial void RunsAsDaemonUser(ILogger logger, uint uid, string user);

    [LoggerMessage(6051, LogLevel.Warning, "Machine {MachineId}: the console {Socket} of the QEMU taken back does not answer ({Reason}); its output is not recorded")]
    public static partial void ConsoleNotConnected(ILogger logger, string machineId, string socket, string reason);
}
