using System.Net;
using Falk.Core.Processes;
using Falk.Core.Unix;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Api;

/// <summary>A daemon that stops or dies and starts again: machines are taken back or cleaned up, never leaked.</summary>
public sealed class RecoveryTests
{
    private static string Template(int marker) => $"""
        [sleeper]
        type = custom
        launch = /bin/sleep {marker}
        ssh_user = nobody
        """;

    [Fact(Timeout = 90_000)]
    public async Task After_SIGTERM_with_keep_the_next_start_takes_the_machines_back_with_their_ids_ports_and_leases()
    {
        var ct = TestContext.Current.CancellationToken;
        var marker = Random.Shared.Next(100_000, 999_999);
        var daemon = await FalkDaemon.StartAsync(Template(marker), ct, onShutdown: "keep");
        await using (daemon)
        {
            var running = await daemon.Client.CreateAsync("sleeper", ct);
            var prepared = await daemon.Client.CreateAsync("sleeper", ct);
            var runningId = running["id"]!.GetValue<string>();
            await daemon.Client.BootAsync(runningId, ct, "");
            var pid = ProcessTable.WithArgument($"sleep {marker}").Single();

            (await daemon.SignalDaemonOnlyAsync(kill: false, ct)).Should().Be(0);
            ProcessTable.WithArgument($"sleep {marker}").Should().Equal([pid], "keep leaves the machine running");

            await daemon.StartProcessAsync(ct);
            var machines = await daemon.Client.ListAsync(ct);

            machines.Should().HaveCount(2);
            var back = machines.Single(m => m!["id"]!.GetValue<string>() == runningId)!;
            back["state"]!.GetValue<string>().Should().Be("running");
            back["ssh"]!["port"]!.GetValue<int>().Should().Be(running["ssh"]!["port"]!.GetValue<int>());
            back["lease_expires_at"]!.GetValue<DateTimeOffset>().Should().Be(running["lease_expires_at"]!.GetValue<DateTimeOffset>());
            machines.Single(m => m!["id"]!.GetValue<string>() == prepared["id"]!.GetValue<string>())!["state"]!.GetValue<string>().Should().Be("prepared");

            // A new machine does not get the port of a machine taken back.
            var fresh = await daemon.Client.CreateAsync("sleeper", ct);
            fresh["ssh"]!["port"]!.GetValue<int>().Should().NotBe(running["ssh"]!["port"]!.GetValue<int>());

            await daemon.Client.DeleteMachineAsync(runningId, ct);
            ProcessTable.WithArgument($"sleep {marker}").Should().BeEmpty("the taken-back machine is stopped by delete");
        }
    }

    [Fact(Timeout = 90_000)]
    public async Task After_kill_9_a_machine_that_died_meanwhile_is_cleaned_up_and_unrecorded_leftovers_are_removed()
    {
        var ct = TestContext.Current.CancellationToken;
        var marker = Random.Shared.Next(100_000, 999_999);
        var daemon = await FalkDaemon.StartAsync(Template(marker), ct, onShutdown: "keep");
        await using (daemon)
        {
            var survivor = (await daemon.Client.CreateAsync("sleeper", ct))["id"]!.GetValue<string>();
            var victim = (await daemon.Client.CreateAsync("sleeper", ct))["id"]!.GetValue<string>();
            await daemon.Client.BootAsync(survivor, ct, "");
            await daemon.Client.BootAsync(victim, ct, "");
            await daemon.SignalDaemonOnlyAsync(kill: true, ct);

            // While the daemon is down, one machine's process dies, and a stray process and folder appear
            // that carry this daemon's marks but belong to no recorded machine.
            var pids = ProcessTable.WithArgument($"sleep {marker}");
            pids.Should().HaveCount(2);
            var victimPid = pids.Single(p => ProcessTree.EnvironmentValue(p, "FALK_MACHINE_ID") == victim);
            ProcessTree.Kill(victimPid);
            var instance = ProcessTree.EnvironmentValue(pids.Single(p => p != victimPid), "FALK_INSTANCE")!;
            var orphan = RunningProcess.Start(new ProcessSpec(["setsid", "sleep", $"{marker}9"])
            {
                Environment = new Dictionary<string, string?> { ["FALK_INSTANCE"] = instance, ["FALK_MACHINE_ID"] = "mnotrecorded1" },
            });
            await using var orphanHandle = orphan;
            var orphanFolder = Directory.CreateDirectory(Path.Combine(daemon.Directory.File("state"), "machines", "mnotrecorded1")).FullName;

            await daemon.StartProcessAsync(ct);

            var machines = await daemon.Client.ListAsync(ct);
            machines.Should().ContainSingle().Which!["id"]!.GetValue<string>().Should().Be(survivor);
            await orphan.Exited.WaitAsync(TimeSpan.FromSeconds(10), ct);
            Directory.Exists(orphanFolder).Should().BeFalse();
            daemon.Output.Should().Contain($"Machine {victim} (recorded running) was gone after restart");

            await daemon.Client.DeleteMachineAsync(survivor, ct);
            ProcessTable.WithArgument($"sleep {marker}").Should().BeEmpty();
        }
    }

    [Fact(Timeout = 90_000)]
    public async Task After_a_restart_a_launch_whose_pid_another_process_now_holds_is_not_taken_back_and_that_process_is_left_alone()
    {
        Assert.SkipUnless(Environment.UserName == "root", "needs root to hand a chosen pid to a new process (ns_last_pid)");
        var ct = TestContext.Current.CancellationToken;
        var marker = Random.Shared.Next(100_000, 999_999);
        var daemon = await FalkDaemon.StartAsync(Template(marker), ct, onShutdown: "keep");
        await using (daemon)
        {
            var id = (await daemon.Client.CreateAsync("sleeper", ct))["id"]!.GetValue<string>();
            await daemon.Client.BootAsync(id, ct, "");
            var launch = ProcessTable.WithArgument($"sleep {marker}").Should().ContainSingle().Subject;
            await daemon.SignalDaemonOnlyAsync(kill: true, ct);

            // While the daemon is down the launch dies, and its pid goes to an unrelated process (no marks, another start time).
            ProcessTree.Kill(launch);
            await Falk.Core.Waiting.Wait.UntilAsync(
                _ => Task.FromResult(ProcessTree.Read(launch) is null ? Falk.Core.Waiting.ProbeOutcome.Done(true) : Falk.Core.Waiting.ProbeOutcome.NotYet<bool>("the launch is still there")),
                TimeSpan.FromMilliseconds(20), TimeSpan.FromSeconds(10), "the killed launch to be reaped", ct);
            var (holder, holderStart) = await TakePidAsync(launch, $"sleep {marker}7", ct);
            await using var holderHandle = holder;

            await daemon.StartProcessAsync(ct);

            (await daemon.Client.ListAsync(ct)).Should().NotContain(m => m!["id"]!.GetValue<string>() == id, "its launch is gone; the pid's holder is not it");
            ProcessTree.IsSameLiveProcess(launch, holderStart).Should().BeTrue("the process that now holds the pid is not the machine's and is left alone");
        }
    }

    /// <summary>
    /// Starts a process that holds <paramref name="pid"/> (freed before): the kernel hands out the pid after the last one
    /// given (<c>ns_last_pid</c>), so a shell sets that and forks at once; tried again when another fork came between.
    /// </summary>
    private static async Task<(RunningProcess Process, long StartTime)> TakePidAsync(int pid, string command, CancellationToken ct)
    {
        for (var attempt = 0; attempt < 100; attempt++)
        {
            var shell = RunningProcess.Start(new ProcessSpec(["/bin/sh", "-c", $"echo {pid - 1} > /proc/sys/kernel/ns_last_pid; {command} & echo $!; wait"]));
            var printed = await Falk.Core.Waiting.Wait.UntilAsync(
                _ => Task.FromResult(shell.Stdout.Tail(1).Trim() is { Length: > 0 } line ? Falk.Core.Waiting.ProbeOutcome.Done(line) : Falk.Core.Waiting.ProbeOutcome.NotYet<string>("no pid printed yet")),
                TimeSpan.FromMilliseconds(10), TimeSpan.FromSeconds(10), "the shell to print its child's pid", ct);
            if (printed == pid.ToString(System.Globalization.CultureInfo.InvariantCulture) && ProcessTree.StartTime(pid) is { } start)
            {
                return (shell, start);
            }

            foreach (var child in ProcessTree.Descendants(shell.Pid))
            {
                ProcessTree.Kill(child);
            }

            await shell.DisposeAsync();
        }

        throw new InvalidOperationException($"pid {pid} could not be taken: other processes kept forking first");
    }

    [Fact(Timeout = 60_000)]
    public async Task With_on_shutdown_destroy_SIGTERM_leaves_nothing_and_the_next_start_has_no_machines()
    {
        var ct = TestContext.Current.CancellationToken;
        var marker = Random.Shared.Next(100_000, 999_999);
        var daemon = await FalkDaemon.StartAsync(Template(marker), ct, onShutdown: "destroy");
        await using (daemon)
        {
            var id = (await daemon.Client.CreateAsync("sleeper", ct))["id"]!.GetValue<string>();
            await daemon.Client.BootAsync(id, ct, "");

            await daemon.StopAsync(ct);
            ProcessTable.WithArgument($"sleep {marker}").Should().BeEmpty();

            await daemon.StartProcessAsync(ct);
            (await daemon.Client.ListAsync(ct)).Should().BeEmpty();
            using var gone = await daemon.Client.GetAsync($"v1/machines/{id}", ct);
            gone.StatusCode.Should().Be(HttpStatusCode.NotFound);
        }
    }

    [Fact(Timeout = 300_000)]
    public async Task Killing_the_daemon_at_random_points_of_50_lifecycles_never_leaks_a_process_a_folder_or_a_port()
    {
        var ct = TestContext.Current.CancellationToken;
        using var empty = new TempDirectory();

        // The launch holds the machine's port on the host, as an sshd would, so a leaked launch shows as a held port.
        var daemon = await FalkDaemon.StartAsync($$"""
            [holder]
            type = custom
            launch = /bin/busybox httpd -f -p {SSHPORT} -h {{empty.Path}}
            ssh_user = nobody
            """, ct, onShutdown: "keep", ports: 20);
        await using (daemon)
        {
            var (_, kills) = await KillChaos.RunAsync(daemon, new ChaosPlan("holder", Cycles: 50, KillsIn: cycle => cycle % 2 == 0, LatestKill: TimeSpan.FromMilliseconds(150), MinimumCompleted: 25), ct);

            kills.Should().Be(25);
            ProcessTree.WithEnvironment("FALK_INSTANCE", daemon.Instance).Should().BeEmpty();
        }
    }
}
