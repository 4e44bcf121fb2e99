namespace Falk.Core.Machines;

/// <summary>Lifecycle of a machine: prepared → booting → running → stopping → stopped, or failed.</summary>
public enum MachineState
{
    Prepared,
    Booting,
    Running,
    Stopping,
    Stopped,
    Failed,
}

public static class MachineStateExtensions
{
    public static string ToWire(this MachineState state) => state switch
    {
        MachineState.Prepared => "prepared",
        MachineState.Booting => "booting",
        MachineState.Running => "running",
        MachineState.Stopping => "stopping",
        MachineState.Stopped => "stopped",
        MachineState.Failed => "failed",
        _ => throw new ArgumentOutOfRangeException(nameof(state), state, null),
    };

    /// <summary>States from which the machine may be launched (again).</summary>
    public static bool CanBoot(this MachineState state) => state is MachineState.Prepared or MachineState.Stopped;

    /// <summary>States in which a guest may be running and can be asked to stop.</summary>
    public static bool CanStop(this MachineState state) => state is MachineState.Booting or MachineState.Running;
}
