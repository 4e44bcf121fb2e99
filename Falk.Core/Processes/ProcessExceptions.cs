namespace Falk.Core.Processes;

/// <summary>A command exited non-zero, could not start, or ran out of time. The message quotes the command.</summary>
public sealed class ProcessFailedException : FalkException
{
    public ProcessFailedException(IReadOnlyList<string> command, string what, int? exitCode, string stderrTail, Exception? inner = null)
        : base("process-failed", Describe(command, what, stderrTail), inner)
    {
        Command = command;
        ExitCode = exitCode;
        StderrTail = stderrTail;
    }

    public IReadOnlyList<string> Command { get; }

    public int? ExitCode { get; }

    public string StderrTail { get; }

    public override string Title => "Command failed";

    public override IReadOnlyDictionary<string, object?> Details => new Dictionary<string, object?>
    {
        ["command"] = CommandLine.Quote(Command),
        ["exit_code"] = ExitCode,
        ["stderr_tail"] = StderrTail,
    };

    private static string Describe(IReadOnlyList<string> command, string what, string stderrTail) =>
        string.IsNullOrWhiteSpace(stderrTail)
            ? $"`{CommandLine.Quote(command)}` {what}"
            : $"`{CommandLine.Quote(command)}` {what}; stderr: {stderrTail}";
}
