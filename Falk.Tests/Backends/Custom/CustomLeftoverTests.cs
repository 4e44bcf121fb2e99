using System.Net;
using System.Net.Sockets;
using Falk.Core.Unix;
using Falk.Core.Waiting;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Backends.Custom;

/// <summary>
/// A launch that starts a real sshd in the background and then ends, as launch scripts do when something inside fails:
/// whatever it started ends with it, before Falk calls the machine failed, and after a daemon restart too. The sshd
/// rewrites its process title, which wipes the environment marks; the double-forking launch also moves it out of the
/// launch's process group (its session stays).
/// </summary>
public sealed class CustomLeftoverTests
{
    public static TheoryData<string> Launches => ["background", "double-fork"];

    [Theory(Timeout = 90_000)]
    [MemberData(nameof(Launches))]
    public async Task A_launch_that_exits_takes_its_server_with_it_before_the_machine_is_reported_failed(string launch)
    {
        var ct = TestContext.Current.CancellationToken;
        await using var setup = await ServerSetup.StartAsync(launch, "destroy", ct);
        var (id, port) = await setup.BootAsync(ct);

        await setup.WaitUntilFailedAsync(id, ct);

        setup.ShouldHaveNothingRunning(id, port, "a machine Falk reports failed serves nothing on its port");
        await setup.Daemon.Client.DeleteMachineAsync(id, ct);
        setup.ShouldHaveNothingRunning(id, port, "the machine is deleted");
    }

    [Theory(Timeout = 90_000)]
    [MemberData(nameof(Launches))]
    public async Task With_a_restart_between_the_exit_and_the_delete_nothing_of_the_machine_is_left(string launch)
    {
        var ct = TestContext.Current.CancellationToken;
        await using var setup = await ServerSetup.StartAsync(launch, "keep", ct);
        var (id, port) = await setup.BootAsync(ct);
        await setup.WaitUntilFailedAsync(id, ct);

        (await setup.Daemon.StopAsync(ct)).Should().Be(0);
        await setup.Daemon.StartProcessAsync(ct);
        await setup.Daemon.Client.DeleteMachineAsync(id, ct);

        setup.ShouldHaveNothingRunning(id, port, "the machine is deleted");
    }

    [Theory(Timeout = 90_000)]
    [MemberData(nameof(Launches))]
    public async Task A_launch_that_exits_while_the_daemon_is_down_leaves_nothing_once_it_is_back(string launch)
    {
        var ct = TestContext.Current.CancellationToken;
        await using var setup = await ServerSetup.StartAsync(launch, "keep", ct);
        var (id, port) = await setup.BootAsync(ct);
        await setup.Daemon.SignalDaemonOnlyAsync(kill: true, ct);
        await Wait.UntilAsync(
            _ => Task.FromResult(ProcessTable.WithArgument($"{setup.Ssh.ConfigPath} & sleep 2").Count == 0 ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>("the launch still runs")),
            TimeSpan.FromMilliseconds(50), TimeSpan.FromSeconds(20), "the launch to exit", ct);
        ProcessTable.WithArgument(setup.Ssh.ConfigPath).Should().NotBeEmpty("with the daemon down, nobody ended the server yet");

        await setup.Daemon.StartProcessAsync(ct);

        setup.ShouldHaveNothingRunning(id, port, "the start-up sweep removed what the dead launch left");
        using var gone = await setup.Daemon.Client.GetAsync($"v1/machines/{id}", ct);
        gone.StatusCode.Should().Be(HttpStatusCode.NotFound, "a machine whose launch ended while the daemon was away is cleaned up");
    }

    /// <summary>A daemon with one custom template whose launch starts sshd in the background and exits with 139 two seconds later.</summary>
    private sealed class ServerSetup(TempDirectory keys, SshServerFiles ssh, FalkDaemon daemon) : IAsyncDisposable
    {
        public SshServerFiles Ssh => ssh;

        public FalkDaemon Daemon => daemon;

        public static async Task<ServerSetup> StartAsync(string launch, string onShutdown, CancellationToken ct)
        {
            var keys = new TempDirectory();
            var ssh = await SshServerFiles.CreateAsync(keys.Path, ct);
            var server = ssh.LaunchCommand;
            var command = launch switch
            {
                "background" => $"/bin/sh -c \"{server} & sleep 2; exit 139\"",

                // perl leaves the group (setpgid), forks and exits: sshd, reparented to init, is in a group of its own.
                "double-fork" => $"/bin/sh -c '/usr/bin/perl -e \"setpgrp(0, 0); exit if fork; exec @ARGV or die\" {server} & sleep 2; exit 139'",
                _ => throw new ArgumentOutOfRangeException(nameof(launch)),
            };
            var daemon = await FalkDaemon.StartAsync($"""
                [server]
                type = custom
                launch = {command}
                ssh_user = {ssh.User}
                ssh_host = 127.0.0.1
                ssh_known_host_key_file = {ssh.HostPublicKeyPath}
                """, ct, onShutdown: onShutdown);
            return new ServerSetup(keys, ssh, daemon);
        }

        /// <summary>Creates and boots a machine and returns once its sshd serves (before the launch exits).</summary>
        public async Task<(string Id, int Port)> BootAsync(CancellationToken ct)
        {
            var machine = await Daemon.Client.CreateAsync("server", ct);
            var id = machine["id"]!.GetValue<string>();
            await Daemon.Client.BootAsync(id, ct, "");
            await Wait.UntilAsync(
                async c => (await Daemon.Client.GetStringAsync($"v1/machines/{id}/console", c)).Contains("Server listening on", StringComparison.Ordinal)
                    ? ProbeOutcome.Done(true)
                    : ProbeOutcome.NotYet<bool>("sshd has not said it listens"),
                TimeSpan.FromMilliseconds(20), TimeSpan.FromSeconds(20), "sshd to listen", ct);
            return (id, machine["ssh"]!["port"]!.GetValue<int>());
        }

        public Task<bool> WaitUntilFailedAsync(string id, CancellationToken ct) =>
            Wait.UntilAsync(
                async c => await Daemon.Client.StateAsync(id, c) is var state && state == "failed" ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>(state),
                TimeSpan.FromMilliseconds(20), TimeSpan.FromSeconds(20), "the machine to fail", ct);

        public void ShouldHaveNothingRunning(string id, int port, string because)
        {
            ProcessTable.WithArgument(Ssh.ConfigPath).Should().BeEmpty(because);
            ProcessTree.WithEnvironment("FALK_MACHINE_ID", id).Should().BeEmpty(because);
            using var listener = new TcpListener(IPAddress.Loopback, port);
            listener.Invoking(l => l.Start()).Should().NotThrow<SocketException>($"port {port} is free once {because}");
        }

        public async ValueTask DisposeAsync()
        {
            await Daemon.DisposeAsync();

            // Only when a test failed is anything left; it must not outlive the run.
            ProcessTable.KillWithArgument(Ssh.ConfigPath);

            keys.Dispose();
        }
    }
}
