using System.Globalization;

namespace Falk.Tests.Fixtures;

/// <summary>Looks at the real process table, to check that nothing was left running.</summary>
public static class ProcessTable
{
    /// <summary>Pids of live (non-zombie) processes whose command line contains <paramref name="fragment"/>.</summary>
    public static IReadOnlyList<int> WithArgument(string fragment)
    {
        var result = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid))
            {
                continue;
            }

            try
            {
                var cmdline = File.ReadAllText(Path.Combine(dir, "cmdline")).Replace('\0', ' ');
                var stat = File.ReadAllText(Path.Combine(dir, "stat"));
                var state = stat[(stat.LastIndexOf(')') + 2)..][0];
                if (state != 'Z' && cmdline.Contains(fragment, StringComparison.Ordinal))
                {
                    result.Add(pid);
                }
            }
            catch (IOException)
            {
                // The process ended while we looked.
            }
        }

        return result;
    }

    /// <summary>Kills what a failed test left running: processes whose command line holds <paramref name="fragment"/>.</summary>
    public static void KillWithArgument(string fragment)
    {
        foreach (var pid in WithArgument(fragment))
        {
            Falk.Core.Unix.ProcessTree.Kill(pid);
        }
    }

    /// <summary><see cref="KillWithArgument"/> on disposal.</summary>
    public static IDisposable KillOnDispose(string fragment) => new Cleanup(fragment);

    private sealed class Cleanup(string fragment) : IDisposable
    {
        public void Dispose() => KillWithArgument(fragment);
    }
}
