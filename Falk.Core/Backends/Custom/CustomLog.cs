using Microsoft.Extensions.Logging;

namespace Falk.Core.Backends.Custom;

/// <summary>Log messages of the custom backend (event ids 3000–3099).</summary>
internal static partial class CustomLog
{
    [LoggerMessage(3000, LogLevel.Information, "Machine {MachineId}: running {Step}: {Command}")]
    public static partial void RunningStep(ILogger logger, string machineId, string step, string command);

    [LoggerMessage(3001, LogLevel.Information, "Machine {MachineId}: launched pid {Pid}: {Command}")]
    public static partial void Launched(ILogger logger, string machineId, int pid, string command);

    [LoggerMessage(3003, LogLevel.Warning, "Killed orphan process {Pid} of unknown machine {MachineId}")]
    public static partial void OrphanKilled(ILogger logger, string machineId, int pid);

    [LoggerMessage(3004, LogLevel.Warning, "Machine {MachineId}: processes outlived the end of its launch: {Reason}")]
    public static partial void LeftoversSurvived(ILogger logger, string machineId, string reason);

    [LoggerMessage(3002, LogLevel.Debug, "Machine {MachineId}: {Line}")]
    public static partial void Output(ILogger logger, string machineId, string line);
}
