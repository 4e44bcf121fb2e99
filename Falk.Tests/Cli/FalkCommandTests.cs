using System.Net;
using System.Text.Json.Nodes;
using Falk.Core.Machines;
using Falk.Core.Waiting;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Cli;

/// <summary>The falk command against a real daemon with a custom sshd template.</summary>
public sealed class FalkCommandTests(SshdDaemonFixture fixture) : IClassFixture<SshdDaemonFixture>
{
    private string Socket => fixture.Daemon.SocketPath;

    [Fact(Timeout = 120_000)]
    public async Task Run_executes_a_command_in_a_throwaway_machine_passes_its_exit_code_and_deletes_it()
    {
        var ct = TestContext.Current.CancellationToken;

        var (code, stdout, stderr) = await FalkCommand.RunAsync(Socket, ct, "run", "sshd", "-i", fixture.Ssh.ClientKeyPath, "--", "sh", "-c", "echo \"two  words\"; exit 3");

        code.Should().Be(3, stderr);
        stdout.Trim().Should().Be("two  words");
        stderr.Should().Contain("booting").And.Contain("deleting");
        (await fixture.Client.ListAsync(ct)).Should().BeEmpty();
    }

    [Fact(Timeout = 60_000)]
    public async Task Json_output_parses_and_is_the_APIs_JSON()
    {
        var ct = TestContext.Current.CancellationToken;
        var id = (await fixture.Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>();
        try
        {
            var (lsCode, ls, _) = await FalkCommand.RunAsync(Socket, ct, "ls", "--json");
            var (showCode, show, _) = await FalkCommand.RunAsync(Socket, ct, "show", id, "--json");
            var (templatesCode, templates, _) = await FalkCommand.RunAsync(Socket, ct, "--json", "templates");

            (lsCode, showCode, templatesCode).Should().Be((0, 0, 0));
            JsonNode.Parse(ls)!.AsArray().Select(m => m!["id"]!.GetValue<string>()).Should().Contain(id);
            JsonNode.Parse(show)!["state"]!.GetValue<string>().Should().Be("prepared");
            JsonNode.Parse(templates)!.AsArray().Select(t => t!["name"]!.GetValue<string>()).Should().Contain("sshd");
        }
        finally
        {
            await fixture.Client.DeleteMachineAsync(id, ct);
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task Errors_are_one_line_with_documented_exit_codes()
    {
        var ct = TestContext.Current.CancellationToken;

        var (unknownCode, _, unknown) = await FalkCommand.RunAsync(Socket, ct, "show", "mnosuchmachine");
        var (downCode, _, down) = await FalkCommand.RunAsync("/nonexistent/falk.sock", ct, "ls");
        var (usageCode, _, _) = await FalkCommand.RunAsync(Socket, ct, "manage", "sshd", "--commit", "--discard");

        unknownCode.Should().Be(1);
        unknown.Trim().Should().Be("falk: Unknown machine: no machine with id 'mnosuchmachine'");
        downCode.Should().Be(3);
        down.Trim().Split('\n').Should().ContainSingle().Which.Should().Contain("/nonexistent/falk.sock");
        usageCode.Should().Be(2);
    }

    [Fact(Timeout = 60_000)]
    public async Task The_original_unix_url_form_of_the_socket_is_accepted()
    {
        var ct = TestContext.Current.CancellationToken;
        var (code, stdout, _) = await FalkCommand.RunAsync("unix://" + Socket, ct, "templates", "--json");
        code.Should().Be(0);
        JsonNode.Parse(stdout).Should().NotBeNull();
    }

    [Fact(Timeout = 120_000)]
    public async Task SIGINT_during_boot_leaves_no_machine()
    {
        var ct = TestContext.Current.CancellationToken;
        // The unpinned template never gets a login key here, but boot only needs SSH to answer: use a template
        // whose SSH never answers instead, so the command is surely still booting when interrupted.
        var daemon = await FalkDaemon.StartAsync("""
            [never-ready]
            type = custom
            launch = /bin/sleep 1000
            ssh_user = nobody
            ssh_host = 127.0.0.1
            """, ct);
        await using (daemon)
        {
            var falk = FalkCommand.Start(daemon.SocketPath, "run", "never-ready", "--", "true");
            await using (falk)
            {
                await Wait.UntilAsync(
                    async c => (await daemon.Client.ListAsync(c)).Any(m => m!["state"]!.GetValue<string>() == "booting")
                        ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>("not booting yet"),
                    TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(30), "the machine to boot", ct);

                Falk.Core.Unix.ProcessTree.Interrupt(falk.Pid);

                (await falk.WaitForExitAsync(ct).WaitAsync(TimeSpan.FromSeconds(30), ct)).Should().Be(130);
                (await daemon.Client.ListAsync(ct)).Should().BeEmpty();
                Falk.Core.Unix.ProcessTree.WithEnvironment("FALK_INSTANCE", daemon.Instance).Should().BeEmpty("this daemon's launch is gone (other tests' sleeps do not count)");
            }
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task The_socket_option_wins_over_FALK_SOCKET_for_the_API_and_for_the_shell()
    {
        var ct = TestContext.Current.CancellationToken;
        const string Elsewhere = "/nonexistent/falk-env.sock";

        var (optionCode, templates, optionErr) = await FalkCommand.RunAsync(Elsewhere, ct, "--socket", Socket, "templates", "--json");
        var (envCode, _, envErr) = await FalkCommand.RunAsync(Socket, ct, "--socket", "/nonexistent/falk-option.sock", "ls");
        // The shell connects to the socket itself (no HTTP): it ends 0 once connected, 3 when nobody answers there.
        var (shellCode, _, shellErr) = await FalkCommand.RunAsync(Elsewhere, ct, "--socket", Socket, "shell", "kevin");
        var (shellEnvCode, _, shellEnvErr) = await FalkCommand.RunAsync(Socket, ct, "--socket", "/nonexistent/falk-option.sock", "shell", "kevin");

        optionCode.Should().Be(0, optionErr);
        JsonNode.Parse(templates)!.AsArray().Should().NotBeEmpty();
        envCode.Should().Be(3, "the option names a socket nobody answers on, whatever $FALK_SOCKET says");
        envErr.Should().Contain("/nonexistent/falk-option.sock");
        shellCode.Should().Be(0, shellErr);
        shellEnvCode.Should().Be(3);
        shellEnvErr.Should().Contain("/nonexistent/falk-option.sock");
    }

    [Fact(Timeout = 120_000)]
    public async Task Ssh_runs_a_command_in_a_machine_with_its_exit_code_and_exits_255_when_ssh_itself_fails()
    {
        var ct = TestContext.Current.CancellationToken;
        var id = (await fixture.Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>();
        try
        {
            await fixture.Client.BootAsync(id, ct);

            var (code, stdout, stderr) = await FalkCommand.RunAsync(Socket, ct, "ssh", id, "-i", fixture.Ssh.ClientKeyPath, "--", "sh", "-c", "echo \"two  words\"; exit 7");
            // The machine's own host key is a key the machine does not let in: ssh fails, not the command.
            var (refused, _, refusedErr) = await FalkCommand.RunAsync(Socket, ct, "ssh", id, "-i", Path.Combine(fixture.Ssh.Directory, "ssh_host_ed25519_key"), "--", "true");

            code.Should().Be(7, stderr);
            stdout.Trim().Should().Be("two  words");
            refused.Should().Be(255, "README: 255 ssh itself failed");
            refusedErr.Should().Contain("Permission denied");
        }
        finally
        {
            await fixture.Client.DeleteMachineAsync(id, ct);
        }
    }

    [Fact(Timeout = 120_000)]
    public async Task Logs_follow_prints_new_console_lines_as_they_come_and_ends_when_the_machine_stops()
    {
        var ct = TestContext.Current.CancellationToken;
        var booted = await fixture.Client.BootAsync((await fixture.Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>(), ct);
        var id = booted["id"]!.GetValue<string>();
        try
        {
            var (code, once, _) = await FalkCommand.RunAsync(Socket, ct, "logs", id);
            code.Should().Be(0);
            once.Should().Contain("Server listening", "sshd -e logs to the console");

            var falk = FalkCommand.Start(Socket, "logs", "-f", id);
            await using (falk)
            {
                await FalkCommand.PrintedAsync(falk, "Server listening", ct);

                // A login makes sshd write a new line, after falk printed what there was.
                await MachineSsh.RunAsync(booted, fixture.Ssh.User, fixture.Ssh.ClientKeyPath, "true", ct);
                await FalkCommand.PrintedAsync(falk, "Accepted publickey", ct);
                falk.HasExited.Should().BeFalse("it follows while the machine runs");

                using (var stop = await fixture.Client.PostJsonAsync($"v1/machines/{id}/stop", new { timeout_seconds = 5 }, ct))
                {
                    stop.StatusCode.Should().Be(HttpStatusCode.OK);
                }

                (await falk.WaitForExitAsync(ct).WaitAsync(TimeSpan.FromSeconds(20), ct)).Should().Be(0, "following ends with the machine");
            }
        }
        finally
        {
            await fixture.Client.DeleteMachineAsync(id, ct);
        }
    }

    [Fact(Timeout = 120_000)]
    public async Task Events_prints_each_change_as_it_happens_and_rm_deletes_a_running_machine_idempotently()
    {
        var ct = TestContext.Current.CancellationToken;
        var falk = FalkCommand.Start(Socket, "events");
        await using (falk)
        {
            // falk prints what happens from its subscription on: until it shows a machine made for the purpose, it may not listen yet.
            await Wait.UntilAsync(
                async c =>
                {
                    var probe = (await fixture.Client.CreateAsync("sshd", c))["id"]!.GetValue<string>();
                    await fixture.Client.DeleteMachineAsync(probe, c);
                    return falk.Stdout.Tail(1_000).Contains(probe, StringComparison.Ordinal) ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>("falk events prints nothing yet");
                },
                TimeSpan.FromMilliseconds(300), TimeSpan.FromSeconds(30), "falk events to listen", ct);

            var created = await fixture.Client.CreateAsync("sshd", ct);
            var id = created["id"]!.GetValue<string>();
            var port = created["ssh"]!["port"]!.GetValue<int>();
            await fixture.Client.BootAsync(id, ct);
            await FalkCommand.PrintedAsync(falk, $@"\srunning\s+{id}\s+sshd$", ct);

            var (rmCode, _, rmErr) = await FalkCommand.RunAsync(Socket, ct, "rm", id);
            var (againCode, _, againErr) = await FalkCommand.RunAsync(Socket, ct, "rm", id);

            rmCode.Should().Be(0, rmErr);
            rmErr.Should().Contain($"{id} deleted");
            againCode.Should().Be(0, "delete is idempotent: " + againErr);
            using (var gone = await fixture.Client.GetAsync($"v1/machines/{id}", ct))
            {
                gone.StatusCode.Should().Be(HttpStatusCode.NotFound);
            }

            ProcessTable.WithArgument($"-p {port} ").Should().BeEmpty("rm stops the machine hard");
            PortAllocator.IsFreeOnHost(port).Should().BeTrue();
            var printed = await FalkCommand.PrintedAsync(falk, $@"\sdestroyed\s+{id}\s+sshd$", ct);
            printed.Split('\n').Where(l => l.Contains(id, StringComparison.Ordinal)).Select(l => l.Split("  ", StringSplitOptions.RemoveEmptyEntries)[1].Trim())
                .Should().Equal("created", "booting", "ready", "running", "destroyed");

            Falk.Core.Unix.ProcessTree.Interrupt(falk.Pid);
            (await falk.WaitForExitAsync(ct).WaitAsync(TimeSpan.FromSeconds(20), ct)).Should().Be(130, "README: 130 interrupted");
        }
    }

    [Fact(Timeout = 120_000)]
    public async Task A_session_renews_a_lease_shorter_than_itself_and_the_machine_outlives_it()
    {
        var ct = TestContext.Current.CancellationToken;

        var (code, stdout, stderr) = await FalkCommand.RunAsync(Socket, ct, "run", "sshd", "--lease", "2", "-i", fixture.Ssh.ClientKeyPath, "--", "sh", "-c", "sleep 5; echo still-here");

        code.Should().Be(0, stderr);
        stdout.Trim().Should().Be("still-here", "a 2 s lease was renewed through a 5 s session");
        var id = System.Text.RegularExpressions.Regex.Match(stderr, @"booting (\S+) and waiting").Groups[1].Value;
        var events = (await fixture.Client.ReadEventsAsync(0, 1_000, ct)).Where(e => e.Data["machine_id"]!.GetValue<string>() == id).Select(e => e.Type).ToList();
        events.Should().Contain("lease_renewed").And.NotContain("lease_expired");
        events.Count(e => e == "lease_renewed").Should().BeGreaterThanOrEqualTo(3);
    }

    [Fact(Timeout = 60_000)]
    public async Task A_machine_selected_through_falk_shell_outlives_its_lease_while_the_shell_is_open_and_goes_when_it_ends()
    {
        var ct = TestContext.Current.CancellationToken;
        var daemon = await FalkDaemon.StartAsync("""
            [sleeper]
            type = custom
            launch = /bin/sleep 1000
            ssh_user = nobody
            """, ct, "default_lease_seconds = 2");
        await using (daemon)
        {
            await using var kevin = LegacyProtocolClient.Spawn([FalkCommand.Executable, "--socket", daemon.SocketPath, "shell", "kevin"]);
            await kevin.KevinHandshakeAsync(sendLogin: false, ct);
            var runId = (await kevin.ExpectAsync("""{"name": "sleeper", "class": "Select"}""", "RunID", ct, "run_id"))["run_id"]!.GetValue<long>();
            var machine = (await daemon.Client.ListAsync(ct)).Should().ContainSingle().Subject!;
            var id = machine["id"]!.GetValue<string>();
            machine["lease_expires_at"]!.GetValue<DateTimeOffset>().Should().BeCloseTo(DateTimeOffset.UtcNow.AddSeconds(2), TimeSpan.FromSeconds(2));

            await Task.Delay(TimeSpan.FromSeconds(5), ct); // more than twice the lease, with the shell open

            (await daemon.Client.StateAsync(id, ct)).Should().Be("prepared", "the connection renews its machines' leases");
            (await kevin.ExpectAsync($$"""{"run_id": {{runId}}, "class": "Status"}""", "VMStatus", ct, "run_id", "running"))["running"]!.GetValue<bool>().Should().BeFalse("the run id still names the prepared machine");
            // The replay comes at once; then renewals keep coming, so the read ends at the first short pause.
            var types = (await daemon.Client.ReadEventsAsync(0, 1_000, ct, quiet: TimeSpan.FromMilliseconds(300))).Where(e => e.Data["machine_id"]!.GetValue<string>() == id).Select(e => e.Type).ToList();
            types.Should().Contain("lease_renewed").And.NotContain("lease_expired");

            kevin.EndInput();
            await Wait.UntilAsync(
                async c => (await daemon.Client.ListAsync(c)).Count == 0 ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>("the machine is still there"),
                TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(20), "the shell's end to destroy its machine", ct);
        }
    }

    [Fact(Timeout = 120_000)]
    public async Task Manage_without_a_terminal_and_without_commit_or_discard_discards_without_asking()
    {
        var ct = TestContext.Current.CancellationToken;

        var (code, _, stderr) = await FalkCommand.RunAsync(Socket, ct, "manage", "sshd", "--wait-stopped", "0", "-i", fixture.Ssh.ClientKeyPath, "--", "true");

        code.Should().Be(0, stderr);
        stderr.Should().Contain("changes discarded").And.NotContain("Commit changes").And.NotContain("committing");
        (await fixture.Client.ListAsync(ct)).Should().BeEmpty();
    }
}
