using System.Globalization;
using Falk.Core.Waiting;

namespace Falk.Core.Unix;

/// <summary>One process as /proc shows it: ids, state and start time (clock ticks since boot, to tell a reused pid apart).</summary>
public readonly record struct ProcessInfo(int Pid, char State, int ParentPid, int ProcessGroup, int Session, long StartTime)
{
    public bool IsZombie => State == 'Z';
}

/// <summary>Looks at processes through /proc: descendants, groups and sessions, start times, environment markers.</summary>
public static class ProcessTree
{
    /// <summary>This boot of the host: start times count from it, so a start time recorded in another boot means nothing.</summary>
    public static string BootId { get; } = File.Exists("/proc/sys/kernel/random/boot_id")
        ? File.ReadAllText("/proc/sys/kernel/random/boot_id").Trim()
        : string.Empty;

    /// <summary>The unit of start times in /proc (USER_HZ, which Linux fixes at 100 for user space on every architecture).</summary>
    public const long ClockTicksPerSecond = 100;

    /// <summary>Now, in the clock ticks since boot that start times are counted in (from /proc/uptime).</summary>
    public static long TicksSinceBoot() =>
        (long)(double.Parse(File.ReadAllText("/proc/uptime").Split(' ')[0], CultureInfo.InvariantCulture) * ClockTicksPerSecond);

    /// <summary>SIGKILL to one process; a process already gone is fine.</summary>
    public static void Kill(int pid) => _ = Native.kill(pid, Native.SIGKILL);

    /// <summary>SIGKILL to a process seen earlier, only while its pid still names that very process (same start time).</summary>
    public static void Kill(ProcessInfo process)
    {
        if (Read(process.Pid)?.StartTime == process.StartTime)
        {
            Kill(process.Pid);
        }
    }

    /// <summary>SIGINT to one process, as Ctrl-C in its terminal would send.</summary>
    public static void Interrupt(int pid) => _ = Native.kill(pid, Native.SIGINT);

    /// <summary>SIGTERM to one process (not its children); a process already gone is fine.</summary>
    public static void Terminate(int pid) => _ = Native.kill(pid, Native.SIGTERM);

    /// <summary>True while the process exists (a zombie counts as gone).</summary>
    public static bool IsAlive(int pid) => Read(pid) is { IsZombie: false };

    /// <summary>True while <paramref name="pid"/> is the very process that started at <paramref name="startTime"/> and is not a zombie.</summary>
    public static bool IsSameLiveProcess(int pid, long startTime) => Read(pid) is { IsZombie: false } p && p.StartTime == startTime;

    /// <summary>
    /// True while <paramref name="pid"/> is still held by the process that started at <paramref name="startTime"/>, a
    /// zombie included: until it is reaped, its pid (and a process group or session it leads) cannot name anything else.
    /// </summary>
    public static bool IsSameProcess(int pid, long startTime) => Read(pid)?.StartTime == startTime;

    /// <summary>
    /// Completes once the process is gone (exited, or its pid reused). For a process that is not our child, so
    /// its end can only be seen by looking; the exit code is not known.
    /// </summary>
    public static Task WaitUntilGoneAsync(int pid, long startTime, TimeSpan pollInterval, CancellationToken cancellationToken = default) =>
        Wait.UntilAsync(
            _ => Task.FromResult(IsSameLiveProcess(pid, startTime) ? ProbeOutcome.NotYet<bool>($"process {pid} still runs") : ProbeOutcome.Done(true)),
            pollInterval,
            TimeSpan.MaxValue,
            $"process {pid} to end",
            cancellationToken);

    /// <summary>The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), to tell a reused pid apart.</summary>
    public static long? StartTime(int pid) => Read(pid)?.StartTime;

    /// <summary>What /proc/PID/stat says of a process, or null when it is gone.</summary>
    public static ProcessInfo? Read(int pid)
    {
        string text;
        try
        {
            text = File.ReadAllText($"/proc/{pid}/stat");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }

        // The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
        var close = text.LastIndexOf(')');
        if (close < 0)
        {
            return null;
        }

        var fields = text[(close + 2)..].Split(' ');
        return new ProcessInfo(
            pid,
            fields[0][0],
            int.Parse(fields[1], CultureInfo.InvariantCulture),
            int.Parse(fields[2], CultureInfo.InvariantCulture),
            int.Parse(fields[3], CultureInfo.InvariantCulture),
            long.Parse(fields[19], CultureInfo.InvariantCulture));
    }

    /// <summary>Every process on the host but this one, zombies included.</summary>
    public static IReadOnlyList<ProcessInfo> All()
    {
        var result = new List<ProcessInfo>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid)
                && pid != Environment.ProcessId
                && Read(pid) is { } process)
            {
                result.Add(process);
            }
        }

        return result;
    }

    /// <summary>
    /// Live processes whose environment holds <paramref name="name"/>=<paramref name="value"/>. Environments are
    /// inherited, so this finds what a command left behind even after it double-forked into its own session.
    /// </summary>
    public static IReadOnlyList<int> WithEnvironment(string name, string value) =>
        All().Where(p => !p.IsZombie && EnvironmentValue(p.Pid, name) == value).Select(p => p.Pid).ToList();

    /// <summary>
    /// The value of <paramref name="name"/> in a live process's environment as it was started, or null. A program that
    /// rewrites its process title (sshd does) overwrites that memory, and the value is gone.
    /// </summary>
    public static string? EnvironmentValue(int pid, string name)
    {
        try
        {
            var prefix = name + "=";
            return File.ReadAllText($"/proc/{pid}/environ").Split('\0').FirstOrDefault(v => v.StartsWith(prefix, StringComparison.Ordinal))?[prefix.Length..];
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>A process's argument list (from /proc/PID/cmdline); empty when it is gone or not readable.</summary>
    public static IReadOnlyList<string> Arguments(int pid)
    {
        try
        {
            return File.ReadAllText($"/proc/{pid}/cmdline").TrimEnd('\0').Split('\0');
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return [];
        }
    }

    /// <summary>Every live process whose ancestry leads to <paramref name="pid"/>.</summary>
    public static IReadOnlyList<int> Descendants(int pid)
    {
        var parents = All().ToDictionary(p => p.Pid, p => p.ParentPid);
        var result = new List<int>();
        var frontier = new Queue<int>([pid]);
        while (frontier.Count > 0)
        {
            var parent = frontier.Dequeue();
            foreach (var (child, childParent) in parents)
            {
                if (childParent == parent && child != pid && !result.Contains(child))
                {
                    result.Add(child);
                    frontier.Enqueue(child);
                }
            }
        }

        return result;
    }
}
