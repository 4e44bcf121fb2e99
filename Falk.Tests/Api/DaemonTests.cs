using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Api;

/// <summary>falkd as a process: its command line, config errors, and the control socket's life.</summary>
public sealed class DaemonTests
{
    private const string Template = """
        [local]
        type = custom
        launch = /bin/sleep 1000
        ssh_user = nobody
        """;

    [Fact(Timeout = 60_000)]
    public async Task The_socket_has_the_configured_mode_and_group_once_it_answers_and_is_removed_on_SIGTERM()
    {
        var ct = TestContext.Current.CancellationToken;
        var daemon = await FalkDaemon.StartAsync(Template, ct, "control_socket_group = daemon");
        await using (daemon)
        {
            File.GetUnixFileMode(daemon.SocketPath).Should().Be((UnixFileMode)Convert.ToInt32("770", 8));
            var group = await new Falk.Core.Processes.ProcessRunner().RunAsync(new(["stat", "-c", "%g", daemon.SocketPath]), TimeSpan.FromSeconds(10), ct);
            group.StdoutTail.Trim().Should().Be(Falk.Core.Unix.UnixAccounts.ResolveGroup("daemon")!.Value.ToString(System.Globalization.CultureInfo.InvariantCulture), "control_socket_group = daemon");
            using (var response = await daemon.Client.GetAsync("v1/info", ct))
            {
                var info = await response.JsonAsync(ct);
                info["name"]!.GetValue<string>().Should().Be("falk-test");
                info["api_version"]!.GetValue<string>().Should().Be("v1");
                info["backends"]!.AsArray().Select(b => b!.GetValue<string>()).Should().Contain("custom");
            }

            (await daemon.StopAsync(ct)).Should().Be(0);
            File.Exists(daemon.SocketPath).Should().BeFalse();
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task On_the_defaults_the_socket_is_660_leases_are_3600_up_to_86400_and_SIGTERM_keeps_the_machines_for_the_next_start()
    {
        var ct = TestContext.Current.CancellationToken;
        var marker = $"/bin/sleep {Random.Shared.Next(100_000, 999_999)}";
        var daemon = await FalkDaemon.StartAsync(Template.Replace("/bin/sleep 1000", marker, StringComparison.Ordinal), ct, defaults: true);
        await using (daemon)
        {
            File.GetUnixFileMode(daemon.SocketPath).Should().Be((UnixFileMode)Convert.ToInt32("660", 8));
            using (var response = await daemon.Client.GetAsync("v1/info", ct))
            {
                (await response.JsonAsync(ct))["name"]!.GetValue<string>().Should().Be("falk");
            }

            var created = await daemon.Client.CreateAsync("local", ct);
            var id = created["id"]!.GetValue<string>();
            created["lease_expires_at"]!.GetValue<DateTimeOffset>().Should().BeCloseTo(DateTimeOffset.UtcNow.AddSeconds(3600), TimeSpan.FromSeconds(10));
            using (var longest = await daemon.Client.PutAsJsonAsync($"v1/machines/{id}/lease", new { seconds = 86_400 }, ct))
            {
                longest.StatusCode.Should().Be(HttpStatusCode.OK);
            }

            using (var tooLong = await daemon.Client.PutAsJsonAsync($"v1/machines/{id}/lease", new { seconds = 86_401 }, ct))
            {
                await tooLong.ShouldBeProblemAsync(HttpStatusCode.BadRequest, "invalid-request", ct);
            }

            await daemon.Client.BootAsync(id, ct, "");
            var pid = ProcessTable.WithArgument(marker).Should().ContainSingle().Subject;

            (await daemon.SignalDaemonOnlyAsync(kill: false, ct)).Should().Be(0);
            ProcessTable.WithArgument(marker).Should().Equal([pid], "on_shutdown defaults to keep");

            await daemon.StartProcessAsync(ct);
            (await daemon.Client.StateAsync(id, ct)).Should().Be("running", "the next start takes the machine back");
            await daemon.Client.DeleteMachineAsync(id, ct);
            ProcessTable.WithArgument(marker).Should().BeEmpty();
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task A_start_asks_no_engine_that_no_template_uses()
    {
        // Engines on sockets where nothing answers: a daemon with custom templates only must not sweep them.
        var ct = TestContext.Current.CancellationToken;
        using var nowhere = new TempDirectory();
        var daemon = await FalkDaemon.StartAsync(Template, ct,
            $"podman_socket = unix://{nowhere.File("podman.sock")}\nlxd_socket = {nowhere.File("lxd.sock")}\nincus_socket = {nowhere.File("incus.sock")}");
        await using (daemon)
        {
            (await daemon.Client.GetStringAsync("healthz", ct)).Should().NotBeNull();
            daemon.Output.Should().NotContain("unreachable").And.NotContain(nowhere.Path);
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task A_stale_socket_file_is_replaced_but_a_live_daemon_is_not()
    {
        var ct = TestContext.Current.CancellationToken;
        var first = await FalkDaemon.StartAsync(Template, ct);
        await using (first)
        {
            // A second daemon on the same socket refuses to start and says why.
            var (code, _, stderr) = await FalkDaemon.RunToEndAsync(["--config", first.ConfigPath], ct);
            code.Should().Be(1);
            stderr.Should().Contain($"another daemon is already listening on {first.SocketPath}");
            using (var stillThere = await first.Client.GetAsync("healthz", ct))
            {
                stillThere.StatusCode.Should().Be(HttpStatusCode.OK);
            }

            // Kill -9 leaves a stale socket file behind; the next start replaces it.
            await first.Process!.KillAsync(ct);
            File.Exists(first.SocketPath).Should().BeTrue();
            await first.StartProcessAsync(ct);
            using var response = await first.Client.GetAsync("healthz", ct);
            response.StatusCode.Should().Be(HttpStatusCode.OK);
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task A_config_error_is_one_line_and_the_daemon_exits_before_binding()
    {
        var ct = TestContext.Current.CancellationToken;
        using var dir = new TempDirectory();
        var socket = dir.File("falk.sock");
        File.WriteAllText(dir.File("falk.conf"), $"""
            [falk]
            control_socket = {socket}
            vm_ports = [9000,8000]
            [vm]
            type = custom
            ssh_user = u
            launch = /bin/true
            """);

        var (code, stdout, stderr) = await FalkDaemon.RunToEndAsync(["-c", dir.File("falk.conf")], ct);

        code.Should().Be(1);
        stderr.Trim().Split('\n').Should().ContainSingle()
            .Which.Should().Be($"falkd: error: {dir.File("falk.conf")}: [falk] vm_ports: '[9000,8000]' must be two ports from 1 to 65535, the first not above the second");
        stdout.Should().BeEmpty();
        File.Exists(socket).Should().BeFalse();
    }

    [Fact(Timeout = 60_000)]
    public async Task Check_config_validates_and_exits_without_binding()
    {
        var ct = TestContext.Current.CancellationToken;
        using var dir = new TempDirectory();
        var socket = dir.File("falk.sock");
        File.WriteAllText(dir.File("falk.conf"), $"""
            [falk]
            control_socket = {socket}
            state_dir = {dir.File("state")}
            {Template}
            [old-vm]
            type = lxd
            base_image = debian-12
            command = lxc launch {"{BASE_IMAGE}"} {"{CONTAINERNAME}"}
            ssh_user = chantal
            """);

        var (code, stdout, stderr) = await FalkDaemon.RunToEndAsync(["--config", dir.File("falk.conf"), "--check-config"], ct);

        code.Should().Be(0);
        stdout.Should().Contain("OK").And.Contain("local (custom)").And.Contain("old-vm (lxd)");
        File.Exists(socket).Should().BeFalse();
    }

    [Fact(Timeout = 30_000)]
    public async Task Bad_arguments_and_a_missing_config_are_one_line_errors()
    {
        var ct = TestContext.Current.CancellationToken;

        var (badCode, _, badErr) = await FalkDaemon.RunToEndAsync(["--frobnicate"], ct);
        badCode.Should().Be(2);
        badErr.Should().StartWith("falkd: unknown argument '--frobnicate'");

        var (missingCode, _, missingErr) = await FalkDaemon.RunToEndAsync(["-c", "/nonexistent/falk.conf"], ct);
        missingCode.Should().Be(1);
        missingErr.Trim().Should().Be("falkd: error: /nonexistent/falk.conf: no such file");
    }

    [Fact(Timeout = 60_000)]
    public async Task A_path_that_is_not_a_socket_is_never_replaced()
    {
        var ct = TestContext.Current.CancellationToken;
        using var dir = new TempDirectory();
        var socket = dir.File("falk.sock");
        File.WriteAllText(socket, "precious");
        File.WriteAllText(dir.File("falk.conf"), $"""
            [falk]
            control_socket = {socket}
            state_dir = {dir.File("state")}
            {Template}
            """);

        var (code, _, stderr) = await FalkDaemon.RunToEndAsync(["-c", dir.File("falk.conf")], ct);

        code.Should().Be(1);
        stderr.Should().Contain("exists and is not a socket");
        File.ReadAllText(socket).Should().Be("precious");
    }

    [Fact(Timeout = 60_000)]
    public async Task The_socket_directory_is_created()
    {
        var ct = TestContext.Current.CancellationToken;
        using var dir = new TempDirectory();
        var socket = dir.File("run/falk/falk.sock");
        File.WriteAllText(dir.File("falk.conf"), $"""
            [falk]
            control_socket = {socket}
            state_dir = {dir.File("state")}
            {Template}
            """);
        var process = Falk.Core.Processes.RunningProcess.Start(new([FalkDaemon.Executable, "-c", dir.File("falk.conf")]));
        await using (process)
        {
            // The file appears at bind, a moment before listen: wait until a connection is accepted.
            await Falk.Core.Waiting.Wait.UntilAsync(async probeCt =>
            {
                using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await probe.ConnectAsync(new UnixDomainSocketEndPoint(socket), probeCt);
                    return Falk.Core.Waiting.ProbeOutcome.Done(true);
                }
                catch (SocketException e)
                {
                    return Falk.Core.Waiting.ProbeOutcome.NotYet<bool>(e.Message);
                }
            }, TimeSpan.FromMilliseconds(50), TimeSpan.FromSeconds(20), "the daemon accepting on its socket", ct);
            Directory.Exists(Path.GetDirectoryName(socket)).Should().BeTrue();
            await process.StopAsync(TimeSpan.FromSeconds(10), ct);
        }
    }
}
