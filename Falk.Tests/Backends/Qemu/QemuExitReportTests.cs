using Falk.Core.Backends.Qemu;

namespace Falk.Tests.Backends.Qemu;

/// <summary>How a QEMU's end is told: the exit code when there is one, the console and QMP's shutdown reason when it cannot tell.</summary>
public sealed class QemuExitReportTests
{
    [Theory]
    [InlineData(0, null, null, 0, "QEMU exited with code 0 (guest shutdown)")]
    [InlineData(0, "guest-shutdown", null, 0, "QEMU exited with code 0 (guest shutdown: guest-shutdown)")]
    [InlineData(0, null, "Kernel panic - not syncing", null, "the guest kernel panicked (QEMU exited with code 0)")]
    [InlineData(0, "guest-panic", null, null, "the guest panicked (QEMU exited with code 0)")]
    [InlineData(1, null, null, 1, "QEMU exited with code 1")]
    [InlineData(137, null, null, 137, "QEMU was ended by signal 9 (exit code 137)")]
    [InlineData(null, "host-qmp-quit", null, 0, "QEMU ended after a shutdown (host-qmp-quit)")]
    [InlineData(null, null, null, null, "QEMU ended; its exit code is not known after a daemon restart")]
    [InlineData(null, "guest-panic", null, null, "QEMU ended (guest-panic); its exit code is not known after a daemon restart")]
    [InlineData(null, null, "Kernel panic - not syncing", null, "the guest kernel panicked")]
    public void An_exit_is_a_stop_only_when_the_code_or_the_shutdown_reason_says_so(int? code, string? reason, string? panic, int? expectedCode, string expected)
    {
        var exit = QemuExitReport.Describe(code, reason, panic, "tail");

        exit.Description.Should().Be(expected);
        exit.ExitCode.Should().Be(expectedCode);
        exit.OutputTail.Should().Be(panic is null ? "tail" : panic + "\n…\ntail");
    }

    [Fact]
    public void The_console_tail_is_its_last_lines_without_carriage_returns_and_empty_without_a_console()
    {
        using var dir = new Fixtures.TempDirectory();
        var console = dir.File("console.log");
        File.WriteAllText(console, "boot\r\nKernel panic - not syncing: VFS\r\nstack\r\n");

        QemuExitReport.ConsoleTail(console, maxLines: 2).Should().Be("Kernel panic - not syncing: VFS\nstack");
        QemuExitReport.ConsoleTail(dir.File("none.log")).Should().BeEmpty();
    }
}
