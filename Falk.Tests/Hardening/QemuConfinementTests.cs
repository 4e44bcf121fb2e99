using Falk.Core.Backends.Qemu;
using Falk.Core.Processes;
using Falk.Core.Unix;
using Falk.Tests.Backends.Qemu;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Hardening;

/// <summary>
/// Issue 13 items 7 and 8 for QEMU: a running guest's QEMU is under its seccomp sandbox and runs as qemu_user
/// (falk-qemu), which owns only the machine's overlay and QEMU folder (QMP and console sockets, pid file); falk.db and
/// the console log stay the daemon user's alone, and nobody else can read any of them.
/// </summary>
[Collection("qemu")]
public sealed class QemuConfinementTests(QemuDaemonFixture fixture) : IClassFixture<QemuDaemonFixture>
{
    private static readonly UnixFileMode Private = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    [Fact(Timeout = 240_000)]
    public async Task A_running_guests_QEMU_is_sandboxed_runs_as_qemu_user_and_owns_only_its_overlay_and_sockets()
    {
        var ct = TestContext.Current.CancellationToken;
        var user = UnixAccounts.ResolveAccount(QemuDaemonOptions.DefaultUser) ?? throw new InvalidOperationException("scripts/install-deps.sh makes falk-qemu");
        var id = (await fixture.Client.CreateAsync("guest", ct))["id"]!.GetValue<string>();
        await fixture.Client.BootAsync(id, ct, "?wait=ssh&timeout=120");

        var qemu = ProcessTable.WithArgument("falk-" + id).Should().ContainSingle().Subject;
        var arguments = (await File.ReadAllTextAsync($"/proc/{qemu}/cmdline", ct)).Split('\0');
        arguments[0].Should().Be("qemu-system-x86_64", "setsid and setpriv exec QEMU in place");
        arguments.Should().ContainInConsecutiveOrder("-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");
        var status = await File.ReadAllLinesAsync($"/proc/{qemu}/status", ct);
        status.Should().Contain("Seccomp:\t2", "the kernel applies QEMU's seccomp filter");
        status.Should().Contain($"Uid:\t{user.Uid}\t{user.Uid}\t{user.Uid}\t{user.Uid}", "QEMU runs as falk-qemu: real, effective, saved and file-system uid");
        status.Should().Contain($"Gid:\t{user.Gid}\t{user.Gid}\t{user.Gid}\t{user.Gid}");
        status.Single(l => l.StartsWith("Groups:", StringComparison.Ordinal)).Split('\t', ' ').Should().NotContain("0", "root's groups are gone");
        status.Single(l => l.StartsWith("CapEff:", StringComparison.Ordinal)).Should().Be("CapEff:\t0000000000000000");

        var state = fixture.StateDirectory;
        var work = Path.Combine(state, "machines", id);
        ShouldBe(Path.Combine(work, "overlay.qcow2"), user.Uid, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        ShouldBe(Path.Combine(work, "qemu"), user.Uid, Private);
        ShouldBe(Path.Combine(work, "console.log"), 0, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        ShouldBe(Path.Combine(state, "falk.db"), 0, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        foreach (var folder in new[] { state, Path.Combine(state, "machines"), work })
        {
            ShouldBe(folder, 0, Private | UnixFileMode.GroupExecute);
            Group(folder).Should().Be(user.Gid, $"only QEMU's group may pass through {folder}");
        }

        await ShouldNotReadAsync(user.Uid, user.Gid, Path.Combine(state, "falk.db"), ct);
        await ShouldNotReadAsync(user.Uid, user.Gid, Path.Combine(work, "console.log"), ct);
        await StateFiles.ShouldBeUnreadableByNobodyAsync(Path.Combine(work, "overlay.qcow2"), ct);

        await fixture.Client.DeleteMachineAsync(id, ct);
    }

    [Fact(Timeout = 60_000)]
    public async Task A_root_daemon_with_a_QEMU_template_refuses_a_qemu_user_that_does_not_exist_with_one_line_and_one_without_does_not_care()
    {
        var ct = TestContext.Current.CancellationToken;
        using var dir = new TempDirectory();
        var withQemu = dir.File("qemu.conf");
        var withoutQemu = dir.File("custom.conf");
        const string Daemon = """
            [falk]
            qemu_user = falk-no-such-user
            """;
        await File.WriteAllTextAsync(withQemu, Daemon + "\n" + fixture.Guest.Template("vm", fixture.BaseImage), ct);
        await File.WriteAllTextAsync(withoutQemu, Daemon + "\n[local]\ntype = custom\nlaunch = /bin/true\nssh_user = nobody\n", ct);

        var (code, _, stderr) = await FalkDaemon.RunToEndAsync(["--config", withQemu, "--check-config"], ct);
        var (customCode, _, customErrors) = await FalkDaemon.RunToEndAsync(["--config", withoutQemu, "--check-config"], ct);

        code.Should().Be(1);
        stderr.Trim().Split('\n').Should().Equal(
            $"falkd: error: {withQemu}: [falk] qemu_user: no user 'falk-no-such-user' on this host; QEMU must not run as root (scripts/install-deps.sh creates falk-qemu, or name another user)");
        customCode.Should().Be(0, customErrors);
    }

    private static void ShouldBe(string path, int owner, UnixFileMode mode)
    {
        var status = UnixFiles.Lstat(path);
        status.Uid.Should().Be(owner, $"{path} belongs to uid {owner}");
        status.Mode.Should().Be(mode, $"{path} has mode {Convert.ToString((int)mode, 8)}");
    }

    private static int Group(string path) => UnixFiles.Lstat(path).Gid;

    private static async Task ShouldNotReadAsync(int uid, int gid, string file, CancellationToken ct)
    {
        var read = () => new ProcessRunner().RunAsync(
            new(["setpriv", $"--reuid={uid}", $"--regid={gid}", "--clear-groups", "cat", file]), TimeSpan.FromSeconds(10), ct);
        (await read.Should().ThrowAsync<ProcessFailedException>($"QEMU's user must not read {file}")).Which.Message.Should().Contain("Permission denied");
    }
}
