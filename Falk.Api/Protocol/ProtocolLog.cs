namespace Falk.Api.Protocol;

/// <summary>Log messages of the control protocol (event ids 1100–1199).</summary>
internal static partial class ProtocolLog
{
    [LoggerMessage(1100, LogLevel.Debug, "Protocol connection {Connection} opened by uid {Uid} (pid {Pid})")]
    public static partial void Opened(ILogger logger, string connection, int uid, int pid);

    [LoggerMessage(1101, LogLevel.Information, "Protocol connection {Connection}: login as '{Login}' from {Source} (uid {Uid})")]
    public static partial void LoggedIn(ILogger logger, string connection, string login, string source, int uid);

    [LoggerMessage(1102, LogLevel.Information, "Protocol connection {Connection}: run id {RunId} is machine {MachineId} of '{Template}'")]
    public static partial void Selected(ILogger logger, string connection, long runId, string machineId, string template);

    [LoggerMessage(1103, LogLevel.Information, "Protocol connection {Connection}: bad line: {Problem}")]
    public static partial void BadLine(ILogger logger, string connection, string problem);

    [LoggerMessage(1104, LogLevel.Information, "Protocol connection {Connection}: {Request} failed: {Problem}")]
    public static partial void RequestFailed(ILogger logger, string connection, string request, string problem);

    [LoggerMessage(1105, LogLevel.Information, "Protocol connection {Connection}: the client sent {Class} ({Message})")]
    public static partial void ClientEnded(ILogger logger, string connection, string @class, string? message);

    [LoggerMessage(1106, LogLevel.Information, "Protocol connection {Connection} ended: destroying its {Count} machines")]
    public static partial void TearingDown(ILogger logger, string connection, int count);

    [LoggerMessage(1107, LogLevel.Warning, "Protocol connection {Connection}: machine {MachineId} of run id {RunId} could not be destroyed")]
    public static partial void TeardownFailed(ILogger logger, string connection, long runId, string machineId, Exception exception);

    [LoggerMessage(1108, LogLevel.Debug, "Protocol connection {Connection} closed")]
    public static partial void Closed(ILogger logger, string connection);

    [LoggerMessage(1109, LogLevel.Error, "Protocol connection {Connection}: {Request} failed unexpectedly")]
    public static partial void Unexpected(ILogger logger, string connection, string request, Exception exception);
}
