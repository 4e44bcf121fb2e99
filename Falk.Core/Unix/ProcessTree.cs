using System.Globalization;

namespace Falk.Core.Unix;

/// <summary>Signals whole process trees: the process group plus every descendant found in /proc.</summary>
public static class ProcessTree
{
    /// <summary>
    /// Sends <paramref name="signal"/> to the process group led by <paramref name="pid"/> and to every
    /// descendant of <paramref name="pid"/> (which may have left the group, e.g. sshd's session children).
    /// The descendants are found before anything is signalled, while they still have their parents.
    /// </summary>
    public static void Signal(int pid, int signal)
    {
        var descendants = Descendants(pid);
        _ = Native.kill(-pid, signal);
        _ = Native.kill(pid, signal);
        foreach (var child in descendants)
        {
            _ = Native.kill(child, signal);
        }
    }

    /// <summary>True while the process exists (a zombie counts as gone).</summary>
    public static bool IsAlive(int pid)
    {
        var stat = ReadStat(pid);
        return stat is not null && stat.Value.State != 'Z';
    }

    /// <summary>The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), to tell a reused pid apart.</summary>
    public static long? StartTime(int pid) => ReadStat(pid)?.StartTime;

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
