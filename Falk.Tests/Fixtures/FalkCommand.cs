using System.Text.RegularExpressions;
using Falk.Core.Processes;

namespace Falk.Tests.Fixtures;

/// <summary>The real <c>falk</c> command, run as a process against a test daemon's socket, non-interactively or in a terminal.</summary>
public static partial class FalkCommand
{
    public static string Executable => Path.Combine(AppContext.BaseDirectory, "falk");

    public static RunningProcess Start(string socket, params string[] args) => Start(socket, new Dictionary<string, string?>(), args);

    /// <remarks>
    /// falk starts with SIGINT at its default disposition (coreutils <c>env --default-signal</c>), as from a terminal.
    /// A test runner started as a background job of a non-interactive shell inherits SIGINT ignored, passes that on,
    /// and the runtime then rightly leaves SIGINT ignored in falk: Ctrl-C tests would hang there and pass elsewhere.
    /// </remarks>
    public static RunningProcess Start(string socket, IReadOnlyDictionary<string, string?> environment, params string[] args) =>
        RunningProcess.Start(new ProcessSpec(["env", "--default-signal=INT", Executable, .. args])
        {
            Environment = new Dictionary<string, string?>(environment) { ["FALK_SOCKET"] = socket },
        });

    public static Task<(int ExitCode, string Stdout, string Stderr)> RunAsync(string socket, CancellationToken ct, params string[] args) =>
        RunAsync(socket, new Dictionary<string, string?>(), ct, args);

    public static async Task<(int ExitCode, string Stdout, string Stderr)> RunAsync(
        string socket, IReadOnlyDictionary<string, string?> environment, CancellationToken ct, params string[] args)
    {
        var process = Start(socket, environment, args);
        await using (process)
        {
            var code = await process.WaitForExitAsync(ct).WaitAsync(TimeSpan.FromMinutes(5), ct);
            await process.WaitForOutputAsync(ct).WaitAsync(TimeSpan.FromSeconds(10), ct);
            return (code, process.Stdout.Tail(500), process.Stderr.Tail(500));
        }
    }

    /// <summary>
    /// Runs falk with its stdout on a pseudo-terminal <paramref name="columns"/> wide (util-linux <c>script</c>), as a
    /// person at a terminal runs it; returns what the terminal got, without carriage returns and escape sequences.
    /// </summary>
    public static async Task<(int ExitCode, string Screen)> RunInTerminalAsync(string socket, int columns, CancellationToken ct, params string[] args)
    {
        // script runs its command with a shell: each word is quoted (as falk quotes a remote command).
        var command = $"stty cols {columns} rows 50 && exec {Falk.Cli.RemoteCommand.Join([Executable, .. args])}";
        var process = RunningProcess.Start(new ProcessSpec(["script", "--quiet", "--return", "--command", command, "/dev/null"])
        {
            Environment = new Dictionary<string, string?> { ["FALK_SOCKET"] = socket, ["COLUMNS"] = null, ["TERM"] = "xterm" },
        });
        await using (process)
        {
            var code = await process.WaitForExitAsync(ct).WaitAsync(TimeSpan.FromMinutes(1), ct);
            await process.WaitForOutputAsync(ct).WaitAsync(TimeSpan.FromSeconds(10), ct);
            return (code, TerminalControl().Replace(process.Stdout.Tail(500), string.Empty));
        }
    }

    /// <summary>Waits until a running falk has printed a line matching <paramref name="pattern"/> (a regular expression) on stdout; returns everything it printed.</summary>
    public static Task<string> PrintedAsync(RunningProcess falk, string pattern, CancellationToken ct) =>
        Falk.Core.Waiting.Wait.UntilAsync(
            _ => Task.FromResult(falk.Stdout.Tail(1_000) is var printed && Regex.IsMatch(printed, pattern, RegexOptions.Multiline)
                ? Falk.Core.Waiting.ProbeOutcome.Done(printed)
                : Falk.Core.Waiting.ProbeOutcome.NotYet<string>($"falk printed so far: {printed}")),
            TimeSpan.FromMilliseconds(50), TimeSpan.FromSeconds(30), $"falk to print /{pattern}/", ct);

    [GeneratedRegex(@"\r|\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]")]
    private static partial Regex TerminalControl();
}
