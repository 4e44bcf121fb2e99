using System.Globalization;

namespace Falk.Benchmarks;

/// <summary>What /proc tells of a running process.</summary>
public static class ProcessFigures
{
    /// <summary>A numeric field of /proc/PID/status, e.g. <c>VmRSS</c> (kB) or <c>Threads</c>.</summary>
    public static long Status(int pid, string name) =>
        long.Parse(File.ReadAllLines($"/proc/{pid}/status").First(l => l.StartsWith(name + ":", StringComparison.Ordinal))
            .Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);

    public static double RssMiB(int pid) => Status(pid, "VmRSS") / 1024.0;

    /// <summary>The 1, 5 and 15 minute load averages, as <c>uptime</c> shows them.</summary>
    public static string LoadAverage() => string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ')[..3]);
}
