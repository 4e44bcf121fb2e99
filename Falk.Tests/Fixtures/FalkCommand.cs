using Falk.Core.Processes;

namespace Falk.Tests.Fixtures;

/// <summary>The real <c>falk</c> command, run as a process against a test daemon's socket, non-interactively.</summary>
public static class FalkCommand
{
    public static string Executable => Path.Combine(AppContext.BaseDirectory, "falk");

    public static RunningProcess Start(string socket, params string[] args) =>
        RunningProcess.Start(new ProcessSpec([Executable, .. args])
        {
            Environment = new Dictionary<string, string?> { ["FALK_SOCKET"] = socket },
        });

    public static async Task<(int ExitCode, string Stdout, string Stderr)> RunAsync(string socket, CancellationToken ct, params string[] args)
    {
        var process = Start(socket, args);
        await using (process)
        {
            var code = await process.WaitForExitAsync(ct).WaitAsync(TimeSpan.FromMinutes(5), ct);
            await process.WaitForOutputAsync(ct).WaitAsync(TimeSpan.FromSeconds(10), ct);
            return (code, process.Stdout.Tail(500), process.Stderr.Tail(500));
        }
    }
}
