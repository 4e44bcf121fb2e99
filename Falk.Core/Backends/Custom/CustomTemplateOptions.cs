using System.Text.RegularExpressions;
using Falk.Core.Config;
using Falk.Core.Processes;

namespace Falk.Core.Backends.Custom;

/// <summary>A <c>type = custom</c> template: commands for prepare, launch and cleanup, split like a shell would but never run by one.</summary>
public sealed partial record CustomTemplateOptions(
    IReadOnlyList<string>? Prepare,
    IReadOnlyList<string> Launch,
    IReadOnlyList<string>? Cleanup,
    TimeSpan CommandTimeout)
{
    public const string SshPortPlaceholder = "{SSHPORT}";

    public static readonly TimeSpan DefaultCommandTimeout = TimeSpan.FromSeconds(60);

    /// <summary>
    /// <c>ssh_served_by_launch</c> (default yes): the launch's own processes listen on the SSH port, so readiness fails the
    /// machine when another process does. No for a launch that hands the port to something outside its processes (a
    /// container engine's port proxy).
    /// </summary>
    public bool SshServedByLaunch { get; init; } = true;

    [GeneratedRegex(@"\{[A-Z_]+\}")]
    private static partial Regex PlaceholderPattern();

    public static BackendDescriptor Descriptor { get; } = new("custom", Parse, SupportsManage: true);

    private static CustomTemplateOptions? Parse(SectionReader reader)
    {
        var prepare = ReadCommand(reader, "prepare", required: false);
        var launch = ReadCommand(reader, "launch", required: true);
        var cleanup = ReadCommand(reader, "cleanup", required: false);
        var timeout = reader.Number("command_timeout", 1, 3600);
        var servedByLaunch = reader.Bool("ssh_served_by_launch") ?? true;
        return launch is null
            ? null
            : new CustomTemplateOptions(prepare, launch, cleanup, timeout is null ? DefaultCommandTimeout : TimeSpan.FromSeconds(timeout.Value))
            {
                SshServedByLaunch = servedByLaunch,
            };
    }

    private static IReadOnlyList<string>? ReadCommand(SectionReader reader, string key, bool required)
    {
        var text = required ? reader.Required(key) : reader.Text(key);
        if (text is null)
        {
            return null;
        }

        IReadOnlyList<string> args;
        try
        {
            args = CommandLine.Split(text);
        }
        catch (FormatException e)
        {
            reader.Error(key, e.Message);
            return null;
        }

        if (args.Count == 0)
        {
            reader.Error(key, "is empty");
            return null;
        }

        var unknown = args.SelectMany(a => PlaceholderPattern().Matches(a)).Select(m => m.Value)
            .FirstOrDefault(p => p != SshPortPlaceholder);
        if (unknown is not null)
        {
            reader.Error(key, $"unknown placeholder {unknown} (only {SshPortPlaceholder} is substituted)");
            return null;
        }

        return args;
    }
}
