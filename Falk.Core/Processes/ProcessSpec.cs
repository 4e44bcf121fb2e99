namespace Falk.Core.Processes;

/// <summary>A command to run: an argument list (never a shell line), its environment and folder.</summary>
public sealed record ProcessSpec(IReadOnlyList<string> Command)
{
    /// <summary>Variables set (or, with a null value, removed) on top of the daemon's environment.</summary>
    public IReadOnlyDictionary<string, string?> Environment { get; init; } = new Dictionary<string, string?>();

    public string? WorkingDirectory { get; init; }

    /// <summary>
    /// Starts the process as the leader of a new session and process group (through <c>setsid</c>, which
    /// execs in place and so keeps the pid), so that stopping it reaches everything it started.
    /// </summary>
    public bool OwnProcessGroup { get; init; }

    /// <summary>
    /// Called with every line the process writes to stdout or stderr; a line longer than
    /// <see cref="RunningProcess.MaxLineChars"/> is handed over in pieces of at most that length.
    /// </summary>
    public Action<string>? OnOutputLine { get; init; }

    /// <summary>Called when all output read so far has been handed to <see cref="OnOutputLine"/> (a moment to flush).</summary>
    public Action? OnOutputRead { get; init; }

    public override string ToString() => CommandLine.Quote(Command);
}

/// <summary>How a finished command ended.</summary>
public sealed record ProcessResult(int ExitCode, string StdoutTail, string StderrTail);
