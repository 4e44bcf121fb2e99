namespace Falk.Core.Machines;

/// <summary>
/// Lifecycle of a machine: prepared → booting → running → stopping → stopped, or failed. A running machine whose guest
/// is paused from outside Falk (a QEMU monitor's <c>stop</c>) is paused until it runs again.
/// </summary>
public enum MachineState
{
    Prepared,
    Booting,
    Running,
    Paused,
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
        MachineState.Paused => "paused",
        MachineState.Stopping => "stopping",
        MachineState.Stopped => "stopped",
        MachineState.Failed => "failed",
        _ => throw new ArgumentOutOfRangeException(nameof(state), state, null),
    };

    /// <summary>States from which the machine may be launched (again).</summary>
    public static bool CanBoot(this MachineState state) => state is MachineState.Prepared or MachineState.Stopped;

    /// <summary>States in which a guest may be running and can be asked to stop.</summary>
    public static bool CanStop(this MachineState state) => state is MachineState.Booting or MachineState.Running or MachineState.Paused;
}
