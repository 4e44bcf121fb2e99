using Falk.Core.Machines;
using Falk.Core.Unix;
using Falk.Core.Waiting;

namespace Falk.Core.Processes;

/// <summary>A live process that carries a daemon instance's marks, and the machine they name.</summary>
public readonly record struct MarkedProcess(ProcessInfo Process, string MachineId);

/// <summary>
/// The marks the process-based backends (custom, QEMU) put on every process they start for a machine, as
/// testcontainers labels its containers: the machine's id and the daemon instance's id in the environment. Environments
/// are inherited, so the marks find what a command left behind even after it double-forked into a session of its own;
/// sweeps find processes by them and end them here, until they are gone.
/// </summary>
public static class ProcessMarks
{
    public const string MachineIdVariable = "FALK_MACHINE_ID";
    public const string InstanceVariable = "FALK_INSTANCE";

    /// <summary>How long killed processes get to disappear (and free their ports) before a sweep gives up on them.</summary>
    public static readonly TimeSpan KillTimeout = TimeSpan.FromSeconds(10);

    private static readonly TimeSpan KillPollInterval = TimeSpan.FromMilliseconds(20);

    /// <summary>The environment variables that mark a process as <paramref name="machineId"/>'s of daemon instance <paramref name="instanceId"/>.</summary>
    public static IReadOnlyDictionary<string, string?> Environment(string machineId, string instanceId) => new Dictionary<string, string?>
    {
        [MachineIdVariable] = machineId,
        [InstanceVariable] = instanceId,
    };

    /// <summary>Live processes marked by daemon instance <paramref name="instanceId"/>, with the machine each names.</summary>
    public static IReadOnlyList<MarkedProcess> OfInstance(string instanceId) =>
        ProcessTree.All()
            .Where(p => !p.IsZombie && ProcessTree.EnvironmentValue(p.Pid, InstanceVariable) == instanceId)
            .Select(p => (Process: p, MachineId: ProcessTree.EnvironmentValue(p.Pid, MachineIdVariable)))
            .Where(m => m.MachineId is not null)
            .Select(m => new MarkedProcess(m.Process, m.MachineId!))
            .ToList();

    /// <summary>
    /// Every live process of machine <paramref name="machineId"/>: those carrying its marks, and the members of its
    /// launch's group and session (<paramref name="launch"/>), which may have lost the marks (a program that rewrites its
    /// process title, as sshd does, overwrites its environment).
    /// </summary>
    public static IReadOnlyList<ProcessInfo> OfMachine(string machineId, string instanceId, SessionMark? launch)
    {
        var processes = ProcessTree.All();
        var members = launch?.Members(processes) ?? [];
        return processes
            .Where(p => !p.IsZombie)
            .Where(p => members.Contains(p)
                || (ProcessTree.EnvironmentValue(p.Pid, MachineIdVariable) == machineId && ProcessTree.EnvironmentValue(p.Pid, InstanceVariable) == instanceId))
            .ToList();
    }

    /// <summary>
    /// SIGKILL to what <paramref name="find"/> finds, again and again (a process may fork while it is being killed), until it
    /// finds nothing: signals are delivered asynchronously, so only then are the processes gone and their ports free.
    /// Throws <see cref="WaitTimeoutException"/> when something outlives <see cref="KillTimeout"/> (an unkillable process).
    /// </summary>
    public static Task KillUntilGoneAsync(Func<IReadOnlyList<ProcessInfo>> find, string what, CancellationToken cancellationToken) =>
        Wait.UntilAsync(
            _ =>
            {
                var left = find();
                foreach (var process in left)
                {
                    ProcessTree.Kill(process);
                }

                return Task.FromResult(left.Count == 0 ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>($"{left.Count} processes left: {string.Join(", ", left.Select(p => p.Pid))}"));
            },
            KillPollInterval,
            KillTimeout,
            what,
            cancellationToken);
}
