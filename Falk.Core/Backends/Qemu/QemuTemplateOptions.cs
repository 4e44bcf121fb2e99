using System.Text.RegularExpressions;
using Falk.Core.Config;
using Falk.Core.Processes;

namespace Falk.Core.Backends.Qemu;

/// <summary>
/// A <c>type = qemu</c> template, with the original's keys: <c>base_image</c> (a qcow2 file), <c>overlay_image</c>
/// (a path prefix for the per-machine overlays; without it they live in the machine's work folder) and <c>command</c>
/// (the QEMU command line, with <c>{IMAGENAME}</c> and <c>{SSHPORT}</c> substituted per argument after splitting).
/// Falk adds its own QMP socket, serial console, pid file, <c>-name</c> and <c>-sandbox</c>; a command that sets any of these is refused.
/// <c>boot = resume</c> (default <c>cold</c>) starts machines from a saved running guest instead of booting them.
/// </summary>
public sealed partial record QemuTemplateOptions(
    string BaseImage,
    string? OverlayPrefix,
    IReadOnlyList<string> Command)
{
    public const string ImagePlaceholder = "{IMAGENAME}";
    public const string SshPortPlaceholder = "{SSHPORT}";

    /// <summary>Options Falk sets itself to control the machine; a command may not set them too.</summary>
    public static readonly IReadOnlyList<string> ReservedOptions = ["qmp", "qmp-pretty", "monitor", "serial", "pidfile", "name", "daemonize", "sandbox"];

    public static BackendDescriptor Descriptor { get; } = new("qemu", Parse, SupportsManage: true, QemuDaemonOptions.Parse);

    /// <summary>How a machine's first launch starts its guest.</summary>
    public QemuBoot Boot { get; init; } = QemuBoot.Cold;

    [GeneratedRegex(@"\{[A-Z_]+\}")]
    private static partial Regex PlaceholderPattern();

    private static QemuTemplateOptions? Parse(SectionReader reader)
    {
        var baseImage = reader.FilePath("base_image");
        if (baseImage is null)
        {
            reader.Error("base_image", "is required");
        }

        var overlayPrefix = reader.FilePath("overlay_image");
        if (overlayPrefix is not null && overlayPrefix.Contains(',', StringComparison.Ordinal))
        {
            reader.Error("overlay_image", $"'{overlayPrefix}' contains a comma, which QEMU's option syntax would split; use a path without one");
            overlayPrefix = null;
        }

        var command = ReadCommand(reader);
        var boot = ReadBoot(reader);
        return baseImage is null || command is null || boot is null ? null : new QemuTemplateOptions(baseImage, overlayPrefix, command) { Boot = boot.Value };
    }

    private static QemuBoot? ReadBoot(SectionReader reader)
    {
        switch (reader.Text("boot", "cold"))
        {
            case "cold":
                return QemuBoot.Cold;
            case "resume":
                return QemuBoot.Resume;
            case var other:
                reader.Error("boot", $"'{other}' is neither 'cold' (boot the guest) nor 'resume' (start from a saved running guest)");
                return null;
        }
    }

    private static IReadOnlyList<string>? ReadCommand(SectionReader reader)
    {
        var text = reader.Required("command");
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
            reader.Error("command", e.Message);
            return null;
        }

        if (args.Count == 0)
        {
            reader.Error("command", "is empty");
            return null;
        }

        var unknown = args.SelectMany(a => PlaceholderPattern().Matches(a)).Select(m => m.Value)
            .FirstOrDefault(p => p is not ImagePlaceholder and not SshPortPlaceholder);
        if (unknown is not null)
        {
            reader.Error("command", $"unknown placeholder {unknown} (only {ImagePlaceholder} and {SshPortPlaceholder} are substituted)");
            return null;
        }

        if (!args.Any(a => a.Contains(ImagePlaceholder, StringComparison.Ordinal)))
        {
            reader.Error("command", $"has no {ImagePlaceholder}: the machine's disk (its overlay) would not be used");
            return null;
        }

        var reserved = args.Skip(1).Where(a => a.StartsWith('-')).Select(a => a.TrimStart('-'))
            .FirstOrDefault(o => ReservedOptions.Contains(o, StringComparer.Ordinal));
        if (reserved is not null)
        {
            reader.Error("command", $"sets -{reserved}, which Falk sets itself (QMP socket, serial console, pid file, name, seccomp sandbox; no -daemonize); remove it");
            return null;
        }

        return args;
    }
}

/// <summary>How a QEMU machine's first launch starts its guest.</summary>
public enum QemuBoot
{
    /// <summary>Boots the guest from its disk.</summary>
    Cold,

    /// <summary>Loads the running guest Falk saved once per image version (and boots cold when that fails).</summary>
    Resume,
}
