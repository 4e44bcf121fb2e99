using System.Globalization;

namespace Falk.Core.Unix;

/// <summary>Looks at processes through /proc: descendants, start times, environment markers.</summary>
public static class ProcessTree
{
    /// <summary>SIGKILL to one process; a process already gone is fine.</summary>
    public static void Kill(int pid) => _ = Native.kill(pid, Native.SIGKILL);

    /// <summary>SIGINT to one process, as Ctrl-C in its terminal would send.</summary>
    public static void Interrupt(int pid) => _ = Native.kill(pid, Native.SIGINT);

    /// <summary>SIGTERM to one process (not its children); a process already gone is fine.</summary>
    public static void Terminate(int pid) => _ = Native.kill(pid, Native.SIGTERM);

    /// <summary>True while the process exists (a zombie counts as gone).</summary>
    public static bool IsAlive(int pid)
    {
        var stat = ReadStat(pid);
        return stat is not null && stat.Value.State != 'Z';
    }

    /// <summary>True while <paramref name="pid"/> is the very process that started at <paramref name="startTime"/> and is not a zombie.</summary>
    public static bool IsSameLiveProcess(int pid, long startTime) => StartTime(pid) == startTime && IsAlive(pid);

    /// <summary>
    /// Completes once the process is gone (exited, or its pid reused). For a process that is not our child, so
    /// its end can only be seen by looking; the exit code is not known.
    /// </summary>
    public static async Task WaitUntilGoneAsync(int pid, long startTime, TimeSpan pollInterval)
    {
        while (IsSameLiveProcess(pid, startTime))
        {
            await Task.Delay(pollInterval).ConfigureAwait(false);
        }
    }

    /// <summary>The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), to tell a reused pid apart.</summary>
    public static long? StartTime(int pid) => ReadStat(pid)?.StartTime;

    /// <summary>
    /// Live processes whose environment holds <paramref name="name"/>=<paramref name="value"/>. Environments are
    /// inherited, so this finds what a command left behind even after it double-forked into its own session.
    /// </summary>
    public static IReadOnlyList<int> WithEnvironment(string name, string value)
    {
        var needle = System.Text.Encoding.UTF8.GetBytes($"{name}={value}\0");
        var result = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid) || pid == Environment.ProcessId)
            {
                continue;
            }

            try
            {
                var environ = File.ReadAllBytes(Path.Combine(dir, "environ"));
                if (environ.AsSpan().IndexOf(needle) >= 0 && IsAlive(pid))
                {
                    result.Add(pid);
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Gone, or not ours to read (and so not ours to kill).
            }
        }

        return result;
    }

    /// <summary>The value of <paramref name="name"/> in a live process's environment, or null.</summary>
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
        var parents = new Dictionary<int, int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var candidate)
                && ReadStat(candidate) is { } stat)
            {
                parents[candidate] = stat.ParentPid;
            }
        }

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

    private static (char State, int ParentPid, long StartTime)? ReadStat(int pid)
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
        return (fields[0][0],
            int.Parse(fields[1], CultureInfo.InvariantCulture),
            long.Parse(fields[19], CultureInfo.InvariantCulture));
    }

}
