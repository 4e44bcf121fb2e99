using System.Globalization;

namespace Falk.Core.Backends.Qemu;

/// <summary>
/// Where a machine's QEMU keeps what Falk controls it by: in a folder of QEMU's own inside the machine's work folder
/// (QEMU's user owns it; the console log beside it is the daemon's).
/// </summary>
public sealed record QemuMachinePaths(string WorkDirectory, string ConsoleLog)
{
    public string QemuDirectory => Path.Combine(WorkDirectory, "qemu");

    public string QmpSocket => Path.Combine(QemuDirectory, "qmp.sock");

    public string PidFile => Path.Combine(QemuDirectory, "qemu.pid");

    /// <summary>The serial console QEMU serves; Falk copies it into <see cref="ConsoleLog"/>.</summary>
    public string ConsoleSocket => Path.Combine(QemuDirectory, "console.sock");
}

/// <summary>Builds the argument list QEMU is started with: the template's command, substituted, plus Falk's own options.</summary>
public static class QemuCommandLine
{
    /// <summary>
    /// QEMU's seccomp filter: a guest that escapes into QEMU cannot use obsolete system calls, change its uid or gid,
    /// start programs, or change its scheduling and CPU affinity. (QEMU 7.2 kills itself with SIGSYS when this is
    /// combined with its own <c>-runas</c>.)
    /// </summary>
    public const string Sandbox = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

    /// <param name="incoming">Waits for a saved guest (<c>-incoming defer</c>; <c>migrate-incoming</c> over QMP brings it).</param>
    public static IReadOnlyList<string> Build(QemuTemplateOptions options, string machineId, string overlay, int sshPort, QemuMachinePaths paths, bool incoming = false)
    {
        var port = sshPort.ToString(CultureInfo.InvariantCulture);
        var args = options.Command.Select(a => Substitute(a, overlay, port)).ToList();
        args.AddRange(
        [
            "-name", "falk-" + machineId,
            "-chardev", $"socket,id=falk-qmp,path={EscapeOptionValue(paths.QmpSocket)},server=on,wait=off",
            "-mon", "chardev=falk-qmp,mode=control",
            "-chardev", $"socket,id=falk-serial,path={EscapeOptionValue(paths.ConsoleSocket)},server=on,wait=on",
            "-serial", "chardev:falk-serial",
            "-pidfile", paths.PidFile,
            "-sandbox", Sandbox,
        ]);
        if (incoming)
        {
            args.AddRange(["-incoming", "defer"]);
        }

        return args;
    }

    /// <summary>
    /// Substitutes the placeholders of one argument. Inside QEMU's <c>key=value,key=value</c> syntax (an argument with
    /// a <c>,</c> or <c>=</c> of its own, e.g. <c>file={IMAGENAME},if=virtio</c>) a comma of the path is doubled, as
    /// QEMU reads it; an argument that is the bare path (<c>-hda {IMAGENAME}</c>) takes it as it is.
    /// </summary>
    public static string Substitute(string argument, string image, string sshPort)
    {
        var withPort = argument.Replace(QemuTemplateOptions.SshPortPlaceholder, sshPort, StringComparison.Ordinal);
        if (!withPort.Contains(QemuTemplateOptions.ImagePlaceholder, StringComparison.Ordinal))
        {
            return withPort;
        }

        var optionSyntax = withPort.Replace(QemuTemplateOptions.ImagePlaceholder, string.Empty, StringComparison.Ordinal).AsSpan().IndexOfAny(',', '=') >= 0;
        return withPort.Replace(QemuTemplateOptions.ImagePlaceholder, optionSyntax ? EscapeOptionValue(image) : image, StringComparison.Ordinal);
    }

    /// <summary>QEMU's option syntax splits at commas; a comma inside a value is written twice.</summary>
    public static string EscapeOptionValue(string value) => value.Replace(",", ",,", StringComparison.Ordinal);
}
