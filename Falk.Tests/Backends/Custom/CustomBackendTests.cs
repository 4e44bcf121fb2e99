using System.Net;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Backends.Custom;

/// <summary>The custom backend through the real daemon: the original's commands and environment, and nothing left behind.</summary>
public sealed class CustomBackendTests
{
    [Fact(Timeout = 60_000)]
    public async Task Commands_get_the_port_substituted_and_FALK_MANAGE_and_FALK_SSH_PORT_and_their_justin_names_in_their_environment()
    {
        var ct = TestContext.Current.CancellationToken;
        using var work = new TempDirectory();
        var record = work.File("record");
        var daemon = await FalkDaemon.StartAsync($"""
            [env]
            type = custom
            prepare = /bin/sh -c 'echo "prepare $FALK_SSH_PORT manage=[$FALK_MANAGE] arg=$0 justin=$JUSTIN_SSH_PORT/$JUSTIN_MANAGE" >> {record}' {"{SSHPORT}"}
            launch = /bin/sh -c 'echo "launch $FALK_SSH_PORT manage=[$FALK_MANAGE] arg=$0" >> {record}; exec sleep 1000' {"{SSHPORT}"}
            cleanup = /bin/sh -c 'echo "cleanup $FALK_SSH_PORT manage=[$FALK_MANAGE]" >> {record}'
            ssh_user = nobody
            """, ct);
        await using (daemon)
        {
            var volatileMachine = await daemon.Client.CreateAsync("env", ct);
            var port = volatileMachine["ssh"]!["port"]!.GetValue<int>();
            var id = volatileMachine["id"]!.GetValue<string>();
            await daemon.Client.BootAsync(id, ct, "");
            await Falk.Core.Waiting.Wait.UntilAsync(
                _ => Task.FromResult(File.ReadAllText(record).Contains("launch", StringComparison.Ordinal) ? Falk.Core.Waiting.ProbeOutcome.Done(true) : Falk.Core.Waiting.ProbeOutcome.NotYet<bool>("launch not recorded yet")),
                TimeSpan.FromMilliseconds(20), TimeSpan.FromSeconds(10), "the launch command's line", ct);
            await daemon.Client.DeleteMachineAsync(id, ct);

            using var manageResponse = await daemon.Client.PostJsonAsync("v1/machines", new { template = "env", manage = true }, ct);
            var managed = await manageResponse.JsonAsync(ct);
            manageResponse.StatusCode.Should().Be(HttpStatusCode.Created);
            var managedPort = managed["ssh"]!["port"]!.GetValue<int>();
            await daemon.Client.DeleteMachineAsync(managed["id"]!.GetValue<string>(), ct);

            File.ReadAllLines(record).Should().Equal(
                $"prepare {port} manage=[] arg={port} justin={port}/",
                $"launch {port} manage=[] arg={port}",
                $"cleanup {port} manage=[]",
                $"prepare {managedPort} manage=[true] arg={managedPort} justin={managedPort}/true",
                $"cleanup {managedPort} manage=[true]");
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task Stop_and_delete_end_the_launch_process_and_its_grandchildren()
    {
        var ct = TestContext.Current.CancellationToken;
        var marker = Random.Shared.Next(100_000, 999_999);
        var daemon = await FalkDaemon.StartAsync($"""
            [tree]
            type = custom
            launch = /bin/sh -c 'sleep {marker}1 & sleep {marker}2 & (setsid sleep {marker}3 &) ; wait'
            ssh_user = nobody
            """, ct);
        await using (daemon)
        {
            var id = (await daemon.Client.CreateAsync("tree", ct))["id"]!.GetValue<string>();
            await daemon.Client.BootAsync(id, ct, "");
            await Falk.Core.Waiting.Wait.UntilAsync(
                _ => Task.FromResult(ProcessTable.WithArgument($"sleep {marker}").Count == 4 ? Falk.Core.Waiting.ProbeOutcome.Done(true) : Falk.Core.Waiting.ProbeOutcome.NotYet<bool>("not all started")),
                TimeSpan.FromMilliseconds(50), TimeSpan.FromSeconds(10), "the shell and its three sleeps", ct);

            using var stop = await daemon.Client.PostJsonAsync($"v1/machines/{id}/stop", new { timeout_seconds = 2 }, ct);
            stop.StatusCode.Should().Be(HttpStatusCode.OK);
            ProcessTable.WithArgument($"sleep {marker}").Should().BeEmpty("stop ends the whole tree, even a child in its own session");

            await daemon.Client.BootAsync(id, ct, "");
            await daemon.Client.DeleteMachineAsync(id, ct);
            ProcessTable.WithArgument($"sleep {marker}").Should().BeEmpty("delete ends the whole tree");
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task Stop_escalates_to_SIGKILL_after_its_timeout_for_a_launch_that_ignores_SIGTERM()
    {
        var ct = TestContext.Current.CancellationToken;
        var marker = Random.Shared.Next(100_000, 999_999);

        // An ignored signal stays ignored across exec: this sleep shrugs off SIGTERM.
        var daemon = await FalkDaemon.StartAsync($"""
            [stubborn]
            type = custom
            launch = /bin/sh -c "trap '' TERM; exec sleep {marker}"
            ssh_user = nobody
            """, ct);
        await using (daemon)
        {
            var id = (await daemon.Client.CreateAsync("stubborn", ct))["id"]!.GetValue<string>();
            await daemon.Client.BootAsync(id, ct, "");
            var pid = await Falk.Core.Waiting.Wait.UntilAsync(
                _ => Task.FromResult(ProcessTable.WithArgument($"sleep {marker}") is [var one] ? Falk.Core.Waiting.ProbeOutcome.Done(one) : Falk.Core.Waiting.ProbeOutcome.NotYet<int>("not exec'd yet")),
                TimeSpan.FromMilliseconds(20), TimeSpan.FromSeconds(10), "the sleep that ignores SIGTERM", ct);
            var ignored = File.ReadLines($"/proc/{pid}/status").Single(l => l.StartsWith("SigIgn:", StringComparison.Ordinal))["SigIgn:".Length..].Trim();
            (ulong.Parse(ignored, System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture) & (1UL << 14))
                .Should().NotBe(0UL, "SIGTERM (15) is bit 14 of the ignored-signals mask");

            var started = System.Diagnostics.Stopwatch.StartNew();
            using var stop = await daemon.Client.PostJsonAsync($"v1/machines/{id}/stop", new { timeout_seconds = 2 }, ct);
            var elapsed = started.Elapsed;

            var stopped = await stop.JsonAsync(ct);
            stop.StatusCode.Should().Be(HttpStatusCode.OK, stopped.ToJsonString());
            stopped["state"]!.GetValue<string>().Should().Be("stopped");
            elapsed.Should().BeGreaterThanOrEqualTo(TimeSpan.FromSeconds(2), "SIGTERM was ignored, so only the kill after the timeout ends it");
            ProcessTable.WithArgument($"sleep {marker}").Should().BeEmpty("SIGKILL cannot be ignored");
            await daemon.Client.DeleteMachineAsync(id, ct);
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task A_failing_prepare_is_502_with_exit_code_and_stderr_and_leaves_nothing()
    {
        var ct = TestContext.Current.CancellationToken;
        var daemon = await FalkDaemon.StartAsync("""
            [broken]
            type = custom
            prepare = /bin/sh -c 'echo disk full >&2; exit 7'
            launch = /bin/sleep 1000
            ssh_user = nobody
            """, ct, ports: 1);
        await using (daemon)
        {
            using var response = await daemon.Client.PostJsonAsync("v1/machines", new { template = "broken" }, ct);

            var problem = await response.ShouldBeProblemAsync(HttpStatusCode.BadGateway, "backend-failed", ct);
            problem["detail"]!.GetValue<string>().Should().Contain("exited with code 7").And.Contain("disk full").And.Contain("/bin/sh -c");
            (await daemon.Client.ListAsync(ct)).Should().BeEmpty();

            // The port was given back: with a range of one port, a second try gets the same answer, not 503.
            using var again = await daemon.Client.PostJsonAsync("v1/machines", new { template = "broken" }, ct);
            again.StatusCode.Should().Be(HttpStatusCode.BadGateway);
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task A_cleanup_that_hangs_is_killed_after_command_timeout_and_the_delete_says_so()
    {
        var ct = TestContext.Current.CancellationToken;
        var marker = Random.Shared.Next(100_000, 999_999);
        var daemon = await FalkDaemon.StartAsync($"""
            [slowcleanup]
            type = custom
            launch = /bin/sleep 1000
            cleanup = /bin/sleep {marker}
            command_timeout = 1
            ssh_user = nobody
            """, ct);
        await using (daemon)
        {
            var id = (await daemon.Client.CreateAsync("slowcleanup", ct))["id"]!.GetValue<string>();
            await daemon.Client.BootAsync(id, ct, "");

            var started = System.Diagnostics.Stopwatch.StartNew();
            using var deleted = await daemon.Client.DeleteAsync($"v1/machines/{id}", ct);

            var problem = await deleted.ShouldBeProblemAsync(HttpStatusCode.BadGateway, "backend-failed", ct);
            problem["detail"]!.GetValue<string>().Should().Contain($"`/bin/sleep {marker}` did not finish within 1 s and was killed");
            started.Elapsed.Should().BeGreaterThanOrEqualTo(TimeSpan.FromSeconds(1), "the cleanup ran until its timeout");
            ProcessTable.WithArgument($"sleep {marker}").Should().BeEmpty("the cleanup was killed");
            ProcessTable.WithArgument("sleep 1000").Where(p => Falk.Core.Unix.ProcessTree.EnvironmentValue(p, "FALK_MACHINE_ID") == id).Should().BeEmpty("the launch was stopped before the cleanup");
            using var kept = await daemon.Client.GetAsync($"v1/machines/{id}", ct);
            var machine = await kept.JsonAsync(ct);
            machine["state"]!.GetValue<string>().Should().Be("failed", "the machine stays, failed, for a retried delete");
            machine["last_error"]!.GetValue<string>().Should().Contain("did not finish within 1 s");
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task A_prepare_that_hangs_is_killed_after_command_timeout()
    {
        var ct = TestContext.Current.CancellationToken;
        var marker = Random.Shared.Next(100_000, 999_999);
        var daemon = await FalkDaemon.StartAsync($"""
            [slow]
            type = custom
            prepare = /bin/sleep {marker}
            launch = /bin/sleep 1000
            command_timeout = 1
            ssh_user = nobody
            """, ct);
        await using (daemon)
        {
            using var response = await daemon.Client.PostJsonAsync("v1/machines", new { template = "slow" }, ct);

            var problem = await response.ShouldBeProblemAsync(HttpStatusCode.BadGateway, "backend-failed", ct);
            problem["detail"]!.GetValue<string>().Should().Contain($"`/bin/sleep {marker}` did not finish within 1 s");
            ProcessTable.WithArgument($"sleep {marker}").Should().BeEmpty();
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task A_machine_that_dies_while_Falk_waits_for_ssh_fails_at_once_with_exit_code_and_output()
    {
        var ct = TestContext.Current.CancellationToken;
        var daemon = await FalkDaemon.StartAsync("""
            [dies]
            type = custom
            launch = /bin/sh -c 'sleep 0.3; echo kernel panic >&2; exit 3'
            ssh_user = nobody
            """, ct);
        await using (daemon)
        {
            var id = (await daemon.Client.CreateAsync("dies", ct))["id"]!.GetValue<string>();
            var started = System.Diagnostics.Stopwatch.StartNew();

            using var response = await daemon.Client.PostAsync($"v1/machines/{id}/boot?wait=ssh&timeout=60", null, ct);

            var problem = await response.ShouldBeProblemAsync(HttpStatusCode.BadGateway, "machine-failed", ct);
            started.Elapsed.Should().BeLessThan(TimeSpan.FromSeconds(30), "a dead machine is not waited for until the timeout");
            problem["exit_code"]!.GetValue<int>().Should().Be(3);
            problem["output_tail"]!.GetValue<string>().Should().Contain("kernel panic");
            (await daemon.Client.StateAsync(id, ct)).Should().Be("failed");
            await daemon.Client.DeleteMachineAsync(id, ct);
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task A_machine_whose_ssh_never_answers_times_out_with_504_and_the_last_probe_error()
    {
        var ct = TestContext.Current.CancellationToken;
        var daemon = await FalkDaemon.StartAsync("""
            [mute]
            type = custom
            launch = /bin/sleep 1000
            ssh_user = nobody
            ssh_host = 127.0.0.1
            """, ct);
        await using (daemon)
        {
            var id = (await daemon.Client.CreateAsync("mute", ct))["id"]!.GetValue<string>();

            using var response = await daemon.Client.PostAsync($"v1/machines/{id}/boot?wait=ssh&timeout=2", null, ct);

            var problem = await response.ShouldBeProblemAsync(HttpStatusCode.GatewayTimeout, "wait-timeout", ct);
            problem["detail"]!.GetValue<string>().Should().Contain("did not happen within 2 s");
            problem["last_error"]!.GetValue<string>().Should().Contain("refused");
            await daemon.Client.DeleteMachineAsync(id, ct);
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task A_delete_during_a_boot_ends_with_the_machine_gone_and_nothing_leaked()
    {
        var ct = TestContext.Current.CancellationToken;
        var marker = Random.Shared.Next(100_000, 999_999);
        var daemon = await FalkDaemon.StartAsync($"""
            [slowboot]
            type = custom
            launch = /bin/sleep {marker}
            ssh_user = nobody
            ssh_host = 127.0.0.1
            """, ct);
        await using (daemon)
        {
            var id = (await daemon.Client.CreateAsync("slowboot", ct))["id"]!.GetValue<string>();
            var boot = daemon.Client.PostAsync($"v1/machines/{id}/boot?wait=ssh&timeout=60", null, ct);
            await Falk.Core.Waiting.Wait.UntilAsync(
                _ => Task.FromResult(ProcessTable.WithArgument($"sleep {marker}").Count > 0 ? Falk.Core.Waiting.ProbeOutcome.Done(true) : Falk.Core.Waiting.ProbeOutcome.NotYet<bool>("not launched")),
                TimeSpan.FromMilliseconds(20), TimeSpan.FromSeconds(10), "launch", ct);

            await daemon.Client.DeleteMachineAsync(id, ct);

            using var bootResponse = await boot;
            await bootResponse.ShouldBeProblemAsync(HttpStatusCode.Conflict, "wrong-state", ct);
            ProcessTable.WithArgument($"sleep {marker}").Should().BeEmpty();
            (await daemon.Client.ListAsync(ct)).Should().BeEmpty();
            using var info = await daemon.Client.GetAsync("v1/info", ct);
            (await info.JsonAsync(ct))["capacity"]!["ports_in_use"]!.GetValue<int>().Should().Be(0);
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task When_max_machines_is_reached_create_is_503_with_Retry_After()
    {
        var ct = TestContext.Current.CancellationToken;
        var daemon = await FalkDaemon.StartAsync("""
            [one]
            type = custom
            launch = /bin/sleep 1000
            ssh_user = nobody
            """, ct, "max_machines = 2");
        await using (daemon)
        {
            var first = await daemon.Client.CreateAsync("one", ct);
            await daemon.Client.CreateAsync("one", ct);

            using var third = await daemon.Client.PostJsonAsync("v1/machines", new { template = "one" }, ct);

            var problem = await third.ShouldBeProblemAsync(HttpStatusCode.ServiceUnavailable, "capacity-exhausted", ct);
            problem["detail"]!.GetValue<string>().Should().Contain("max_machines");
            third.Headers.RetryAfter!.Delta.Should().BePositive();
            (await daemon.Client.ListAsync(ct)).Should().HaveCount(2);

            await daemon.Client.DeleteMachineAsync(first["id"]!.GetValue<string>(), ct);
            await daemon.Client.CreateAsync("one", ct);
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task When_every_port_is_taken_create_is_503_and_ports_held_by_other_processes_are_skipped()
    {
        var ct = TestContext.Current.CancellationToken;
        var daemon = await FalkDaemon.StartAsync("""
            [one]
            type = custom
            launch = /bin/sleep 1000
            ssh_user = nobody
            """, ct, ports: 2);
        await using (daemon)
        {
            var range = File.ReadAllLines(daemon.ConfigPath).Single(l => l.StartsWith("vm_ports", StringComparison.Ordinal));
            var firstPort = int.Parse(range.Split('[', ',')[1], System.Globalization.CultureInfo.InvariantCulture);
            using var squatter = new System.Net.Sockets.TcpListener(IPAddress.Loopback, firstPort);
            squatter.Start();

            var machine = await daemon.Client.CreateAsync("one", ct);
            machine["ssh"]!["port"]!.GetValue<int>().Should().Be(firstPort + 1, "the port another process listens on is skipped");

            using var response = await daemon.Client.PostJsonAsync("v1/machines", new { template = "one" }, ct);
            (await response.ShouldBeProblemAsync(HttpStatusCode.ServiceUnavailable, "capacity-exhausted", ct))["detail"]!.GetValue<string>()
                .Should().Contain("no free port");
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task The_console_is_the_launch_output_and_follow_streams_until_the_machine_stops()
    {
        var ct = TestContext.Current.CancellationToken;
        var daemon = await FalkDaemon.StartAsync("""
            [talker]
            type = custom
            launch = /bin/sh -c 'echo first; sleep 1; echo second >&2; sleep 1; echo third'
            ssh_user = nobody
            """, ct);
        await using (daemon)
        {
            var id = (await daemon.Client.CreateAsync("talker", ct))["id"]!.GetValue<string>();
            await daemon.Client.BootAsync(id, ct, "");

            var followed = await daemon.Client.GetStringAsync($"v1/machines/{id}/console?follow=true", ct);

            followed.Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().Equal("first", "second", "third");
            (await daemon.Client.GetStringAsync($"v1/machines/{id}/console", ct)).Should().Be(followed);
            (await daemon.Client.StateAsync(id, ct)).Should().Be("stopped");
            await daemon.Client.DeleteMachineAsync(id, ct);
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task One_management_machine_per_template_and_custom_machines_have_no_snapshots_or_commit()
    {
        var ct = TestContext.Current.CancellationToken;
        var daemon = await FalkDaemon.StartAsync("""
            [plain]
            type = custom
            launch = /bin/sleep 1000
            ssh_user = nobody
            """, ct);
        await using (daemon)
        {
            using var first = await daemon.Client.PostJsonAsync("v1/machines", new { template = "plain", manage = true }, ct);
            var managed = await first.JsonAsync(ct);
            first.StatusCode.Should().Be(HttpStatusCode.Created);
            var id = managed["id"]!.GetValue<string>();

            using var second = await daemon.Client.PostJsonAsync("v1/machines", new { template = "plain", manage = true }, ct);
            (await second.ShouldBeProblemAsync(HttpStatusCode.Conflict, "management-conflict", ct))["detail"]!.GetValue<string>().Should().Contain(id);

            using var snapshot = await daemon.Client.PostJsonAsync($"v1/machines/{id}/snapshots", new { name = "s1" }, ct);
            await snapshot.ShouldBeProblemAsync(HttpStatusCode.Conflict, "not-supported", ct);
            using var commit = await daemon.Client.PostAsync($"v1/machines/{id}/commit", null, ct);
            await commit.ShouldBeProblemAsync(HttpStatusCode.Conflict, "not-supported", ct);

            var volatileId = (await daemon.Client.CreateAsync("plain", ct))["id"]!.GetValue<string>();
            using var volatileCommit = await daemon.Client.PostAsync($"v1/machines/{volatileId}/commit", null, ct);
            await volatileCommit.ShouldBeProblemAsync(HttpStatusCode.Conflict, "management-conflict", ct);

            // Deleting the management machine frees the template for the next one.
            await daemon.Client.DeleteMachineAsync(id, ct);
            using var third = await daemon.Client.PostJsonAsync("v1/machines", new { template = "plain", manage = true }, ct);
            third.StatusCode.Should().Be(HttpStatusCode.Created);
        }
    }
}
