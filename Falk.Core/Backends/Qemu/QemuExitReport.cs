using System.Text;
using Falk.Core.Machines;

namespace Falk.Core.Backends.Qemu;

/// <summary>
/// Why a QEMU ended, in words, from its exit code, the reason of QMP's last <c>SHUTDOWN</c> event and the serial
/// console (<see cref="QemuConsole.Panic"/>); and the console's tail for a machine's error.
/// </summary>
internal static class QemuExitReport
{
    /// <param name="code">QEMU's exit code; null for a QEMU taken back after a restart (not our child).</param>
    /// <param name="shutdownReason">The reason of the last <c>SHUTDOWN</c> event, if one came.</param>
    /// <param name="panic">The console's "Kernel panic" line since the launch, if any.</param>
    public static MachineExit Describe(int? code, string? shutdownReason, string? panic, string tail)
    {
        if (code is null)
        {
            // Not our child: the exit code is gone, but QMP told why it went.
            return panic is not null ? new MachineExit(null, "the guest kernel panicked", panic + "\n…\n" + tail)
                : shutdownReason is null or "guest-panic" ? new MachineExit(null, $"QEMU ended{(shutdownReason is null ? string.Empty : " (" + shutdownReason + ")")}; its exit code is not known after a daemon restart", tail)
                : new MachineExit(0, $"QEMU ended after a shutdown ({shutdownReason})", tail);
        }

        if (code > 128)
        {
            return new MachineExit(code, $"QEMU was ended by signal {code - 128} (exit code {code})", tail);
        }

        if (code != 0)
        {
            return new MachineExit(code, $"QEMU exited with code {code}", tail);
        }

        if (panic is not null)
        {
            // QEMU ends with 0 after a panic with -no-reboot: the exit code cannot tell, the console can.
            // No exit code, so the machine counts as failed, not stopped. The panic line is above the stack trace.
            return new MachineExit(null, "the guest kernel panicked (QEMU exited with code 0)", panic + "\n…\n" + tail);
        }

        return shutdownReason == "guest-panic"
            ? new MachineExit(null, "the guest panicked (QEMU exited with code 0)", tail)
            : new MachineExit(0, $"QEMU exited with code 0 (guest shutdown{(shutdownReason is null ? string.Empty : ": " + shutdownReason)})", tail);
    }

    /// <summary>The last lines of the console, without carriage returns; empty when there is none.</summary>
    public static string ConsoleTail(string consoleLog, int maxBytes = 4096, int maxLines = 20)
    {
        try
        {
            using var file = OpenShared(consoleLog);
            var length = (int)Math.Min(file.Length, maxBytes);
            file.Seek(-length, SeekOrigin.End);
            var buffer = new byte[length];
            file.ReadExactly(buffer);
            var lines = Encoding.UTF8.GetString(buffer).Replace("\r", string.Empty, StringComparison.Ordinal).TrimEnd('\n').Split('\n');
            return string.Join('\n', lines.Skip(Math.Max(0, lines.Length - maxLines)));
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or IOException)
        {
            return string.Empty;
        }
    }

    private static FileStream OpenShared(string path) =>
        new(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
}
