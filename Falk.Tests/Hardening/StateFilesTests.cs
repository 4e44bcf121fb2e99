using System.Net;
using Falk.Core.Processes;
using Falk.Core.Unix;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Hardening;

/// <summary>
/// Issue 13 item 7 on the real daemon: its state folder and every file in it are the daemon user's alone, the
/// control socket is set up without following a swapped path, and one state folder has one daemon.
/// </summary>
public sealed class StateFilesTests
{
    private const string Template = """
        [local]
        type = custom
        launch = /bin/sh -c 'echo booted; exec /bin/sleep 1000'
        ssh_user = nobody
        """;

    [Fact(Timeout = 60_000)]
    public async Task The_state_folder_and_every_file_a_custom_machine_leaves_in_it_are_the_daemon_users_alone()
    {
        var ct = TestContext.Current.CancellationToken;
        var daemon = await FalkDaemon.StartAsync(Template, ct);
        await using (daemon)
        {
            var id = (await daemon.Client.CreateAsync("local", ct, new { tenant = "secret-label" }))["id"]!.GetValue<string>();
            await daemon.Client.BootAsync(id, ct, "");

            var state = daemon.Directory.File("state");
            StateFiles.ShouldBePrivate(state, expectAtLeast: ["falk.db", Path.Combine("machines", id)]);
            await StateFiles.ShouldBeUnreadableByNobodyAsync(Path.Combine(state, "falk.db"), ct);
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task A_state_folder_left_open_to_others_is_closed_on_start()
    {
        var ct = TestContext.Current.CancellationToken;
        var daemon = await FalkDaemon.StartAsync(Template, ct);
        await using (daemon)
        {
            // As an older falkd left it, with the umask's 0755.
            await daemon.StopAsync(ct);
            var state = daemon.Directory.File("state");
            File.SetUnixFileMode(state, (UnixFileMode)Convert.ToInt32("755", 8));

            await daemon.StartProcessAsync(ct);

            File.GetUnixFileMode(state).Should().Be(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task A_state_folder_that_belongs_to_another_user_is_refused_with_one_line()
    {
        var ct = TestContext.Current.CancellationToken;
        using var dir = new TempDirectory();
        var state = dir.File("state");
        Directory.CreateDirectory(state);
        await new ProcessRunner().RunAsync(new(["chown", "65534:65534", state]), TimeSpan.FromSeconds(10), ct);
        await File.WriteAllTextAsync(dir.File("falk.conf"), $"""
            [falk]
            control_socket = {dir.File("falk.sock")}
            state_dir = {state}
            {Template}
            """, ct);

        var (code, _, stderr) = await FalkDaemon.RunToEndAsync(["-c", dir.File("falk.conf")], ct);

        code.Should().Be(1);
        stderr.Split('\n').Should().Contain($"falkd: error: state_dir {state} belongs to uid 65534, not to the daemon's user (uid 0); refusing to keep machines where someone else can change them");
        Directory.GetFileSystemEntries(state).Should().BeEmpty();
    }

    [Fact(Timeout = 60_000)]
    public async Task A_second_daemon_on_the_same_state_folder_refuses_with_one_line_and_the_first_keeps_its_machines()
    {
        var ct = TestContext.Current.CancellationToken;
        var first = await FalkDaemon.StartAsync(Template, ct);
        await using (first)
        {
            var id = (await first.Client.CreateAsync("local", ct))["id"]!.GetValue<string>();
            await first.Client.BootAsync(id, ct, "");

            // Same state_dir, its own socket: only the lock can stop it from "recovering" the first one's machine.
            var secondConfig = first.Directory.File("second.conf");
            await File.WriteAllTextAsync(secondConfig, (await File.ReadAllTextAsync(first.ConfigPath, ct))
                .Replace(first.SocketPath, first.Directory.File("second.sock"), StringComparison.Ordinal), ct);
            var (code, stdout, stderr) = await FalkDaemon.RunToEndAsync(["-c", secondConfig], ct);

            code.Should().Be(1);
            stdout.Should().BeEmpty();
            stderr.Split('\n').Where(line => line.StartsWith("falkd: error:", StringComparison.Ordinal)).Should().ContainSingle().Which.Should()
                .Be($"falkd: error: another falkd already uses state_dir {first.Directory.File("state")}; stop it first or give this one another state_dir");
            (await first.Client.StateAsync(id, ct)).Should().Be("running");
            (await first.Client.ListAsync(ct)).Should().ContainSingle();

            // The lock goes with the daemon, not with the machines it leaves running.
            await first.SignalDaemonOnlyAsync(kill: true, ct);
            await first.StartProcessAsync(ct);
            (await first.Client.ListAsync(ct)).Should().ContainSingle();
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task A_FIFO_at_the_socket_path_is_refused_at_once_and_left_alone()
    {
        var ct = TestContext.Current.CancellationToken;
        using var dir = new TempDirectory();
        var socket = dir.File("falk.sock");
        await new ProcessRunner().RunAsync(new(["mkfifo", socket]), TimeSpan.FromSeconds(10), ct);
        await File.WriteAllTextAsync(dir.File("falk.conf"), $"""
            [falk]
            control_socket = {socket}
            state_dir = {dir.File("state")}
            {Template}
            """, ct);

        // RunToEndAsync gives up after 30 s: a daemon that opens the FIFO would hang there.
        var (code, _, stderr) = await FalkDaemon.RunToEndAsync(["-c", dir.File("falk.conf")], ct);

        code.Should().Be(1);
        stderr.Split('\n').Should().Contain($"falkd: error: {socket} exists and is not a socket (a FIFO); refusing to replace it");
        UnixFiles.Lstat(socket).Kind.Should().Be(NodeKind.Fifo);
    }

    [Fact(Timeout = 60_000)]
    public async Task A_symbolic_link_at_the_socket_path_is_refused_and_its_target_keeps_its_mode_and_group()
    {
        var ct = TestContext.Current.CancellationToken;
        using var dir = new TempDirectory();
        var victim = dir.File("victim");
        await File.WriteAllTextAsync(victim, "root's", ct);
        File.SetUnixFileMode(victim, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        var socket = dir.File("falk.sock");
        File.CreateSymbolicLink(socket, victim);
        await File.WriteAllTextAsync(dir.File("falk.conf"), $"""
            [falk]
            control_socket = {socket}
            control_socket_permissions = 777
            control_socket_group = nogroup
            state_dir = {dir.File("state")}
            {Template}
            """, ct);

        var (code, _, stderr) = await FalkDaemon.RunToEndAsync(["-c", dir.File("falk.conf")], ct);

        code.Should().Be(1);
        stderr.Should().Contain("exists and is not a socket (a symbolic link)");
        File.GetUnixFileMode(victim).Should().Be(UnixFileMode.UserRead | UnixFileMode.UserWrite);
        UnixFiles.Stat(victim).Uid.Should().Be(0);
        (await File.ReadAllTextAsync(victim, ct)).Should().Be("root's");
    }

    [Fact(Timeout = 60_000)]
    public async Task The_socket_gets_its_mode_and_group_and_no_private_bind_folder_is_left_behind()
    {
        var ct = TestContext.Current.CancellationToken;
        var daemon = await FalkDaemon.StartAsync(Template, ct, "control_socket_group = nogroup");
        await using (daemon)
        {
            var status = UnixFiles.Lstat(daemon.SocketPath);
            status.Kind.Should().Be(NodeKind.Socket);
            status.Mode.Should().Be((UnixFileMode)Convert.ToInt32("770", 8));
            var group = await new ProcessRunner().RunAsync(new(["stat", "-c", "%G", daemon.SocketPath]), TimeSpan.FromSeconds(10), ct);
            group.StdoutTail.Trim().Should().Be("nogroup");
            Directory.GetFileSystemEntries(daemon.Directory.Path, ".falk-bind-*").Should().BeEmpty();
            using var response = await daemon.Client.GetAsync("healthz", ct);
            response.StatusCode.Should().Be(HttpStatusCode.OK);
        }
    }
}

/// <summary>Checks on the files a daemon leaves in its state folder.</summary>
internal static class StateFiles
{
    private static readonly UnixFileMode GroupOrOther = (UnixFileMode)Convert.ToInt32("077", 8);

    /// <summary>The folder is 0700 and nothing under it grants anything to the group or others.</summary>
    public static void ShouldBePrivate(string state, IReadOnlyList<string> expectAtLeast)
    {
        File.GetUnixFileMode(state).Should().Be(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, "state_dir is 0700");
        var entries = Directory.GetFileSystemEntries(state, "*", SearchOption.AllDirectories)
            .Select(path => (Path: Path.GetRelativePath(state, path), Status: UnixFiles.Lstat(path)))
            .Where(entry => entry.Status.Kind is not NodeKind.Missing and not NodeKind.SymbolicLink)
            .ToList();
        entries.Select(e => e.Path).Should().Contain(expectAtLeast);
        entries.Where(e => (e.Status.Mode & GroupOrOther) != 0)
            .Select(e => $"{e.Path} {Convert.ToString((int)e.Status.Mode, 8)}")
            .Should().BeEmpty("every file and folder in state_dir is the daemon user's alone");
    }

    /// <summary>Another user (nobody) cannot read the file even when the folder above it is opened up.</summary>
    public static async Task ShouldBeUnreadableByNobodyAsync(string file, CancellationToken ct)
    {
        var opened = new List<string>();
        for (var folder = Path.GetDirectoryName(file); folder is not null and not "/"; folder = Path.GetDirectoryName(folder))
        {
            opened.Add(folder);
        }

        var modes = opened.ToDictionary(f => f, File.GetUnixFileMode);
        try
        {
            foreach (var folder in opened)
            {
                File.SetUnixFileMode(folder, modes[folder] | UnixFileMode.OtherExecute);
            }

            var read = () => new ProcessRunner().RunAsync(
                new(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", file]), TimeSpan.FromSeconds(10), ct);
            (await read.Should().ThrowAsync<Falk.Core.Processes.ProcessFailedException>($"nobody must not read {file}"))
                .Which.Message.Should().Contain("Permission denied");
        }
        finally
        {
            foreach (var (folder, mode) in modes)
            {
                File.SetUnixFileMode(folder, mode);
            }
        }
    }
}
