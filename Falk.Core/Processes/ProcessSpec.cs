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

    /// <summary>Called with every line the process writes to stdout or stderr.</summary>
    public Action<string>? OnOutputLine { get; init; }

    public override string ToString() => CommandLine.Quote(Command);
}

/// <summary>How a finished command ended.</summary>
public sealed record ProcessResult(int ExitCode, string StdoutTail, string StderrTail);
