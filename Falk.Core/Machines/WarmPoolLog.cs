using Microsoft.Extensions.Logging;

namespace Falk.Core.Machines;

/// <summary>Log messages of the warm pools (event ids 2100–2119). Every line names the machine or the template.</summary>
internal static partial class WarmPoolLog
{
    [LoggerMessage(2100, LogLevel.Information, "Machine {MachineId} joined the warm pool of template {Template}")]
    public static partial void Ready(ILogger logger, string machineId, string template);

    [LoggerMessage(2101, LogLevel.Information, "Machine {MachineId} handed out from the warm pool of template {Template} to uid {Owner}")]
    public static partial void HandedOut(ILogger logger, string machineId, string template, int owner);

    [LoggerMessage(2102, LogLevel.Warning, "Filling the warm pool of template {Template} failed (machine {MachineId}); trying again")]
    public static partial void FillFailed(ILogger logger, string template, string? machineId, Exception exception);

    [LoggerMessage(2103, LogLevel.Information, "A commit of template {Template}'s image made {Count} pooled machines stale; they are replaced")]
    public static partial void Stale(ILogger logger, string template, int count);

    [LoggerMessage(2104, LogLevel.Warning, "Pooled machine {MachineId} of template {Template} is {State}, no longer usable; it is replaced")]
    public static partial void Dead(ILogger logger, string machineId, string template, string state);

    [LoggerMessage(2105, LogLevel.Information, "Pooled machine {MachineId} of template {Template} destroyed to make room for a client's machine")]
    public static partial void Evicted(ILogger logger, string machineId, string template);

    [LoggerMessage(2106, LogLevel.Information, "Pooled machine {MachineId} of template {Template} taken back after restart is not kept ({Reason}); it is destroyed")]
    public static partial void NotKept(ILogger logger, string machineId, string template, string reason);

    [LoggerMessage(2107, LogLevel.Error, "Destroying pooled machine {MachineId} failed")]
    public static partial void DestroyFailed(ILogger logger, string machineId, Exception exception);
}
