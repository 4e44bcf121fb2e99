namespace Falk.Api.Hosting;

/// <summary>Log messages of the HTTP side (event ids 1000–1099).</summary>
internal static partial class ApiLog
{
    [LoggerMessage(1000, LogLevel.Information, "falkd {Version} listening on {Socket} (mode {Mode}, group {Group})")]
    public static partial void Listening(ILogger logger, string version, string socket, string mode, string group);

    [LoggerMessage(1001, LogLevel.Warning, "{Warning}")]
    public static partial void ConfigWarning(ILogger logger, string warning);

    [LoggerMessage(1002, LogLevel.Warning, "Refused a request from uid {Uid} (pid {Pid}): not an allowed user or group")]
    public static partial void PeerRefused(ILogger logger, int uid, int pid);

    [LoggerMessage(1003, LogLevel.Error, "Unhandled error on {Method} {Path}")]
    public static partial void Unhandled(ILogger logger, string method, string path, Exception exception);

    [LoggerMessage(1004, LogLevel.Information, "Removed control socket {Socket}")]
    public static partial void SocketRemoved(ILogger logger, string socket);

    [LoggerMessage(1005, LogLevel.Error, "The disk of state_dir is full: {Method} {Path} was refused ({Reason})")]
    public static partial void StorageFull(ILogger logger, string method, string path, string reason);

    [LoggerMessage(1006, LogLevel.Warning, "Refused uid {Uid} (pid {Pid}): {Reason}")]
    public static partial void PeerOverLimit(ILogger logger, int uid, int pid, string reason);
}
