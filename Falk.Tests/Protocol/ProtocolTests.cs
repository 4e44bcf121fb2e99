using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Falk.Core.Machines;
using Falk.Core.Processes;
using Falk.Core.Waiting;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Protocol;

/// <summary>The original control protocol, as unchanged Kevin and people speak it, on the daemon's one socket, against Debian's real sshd.</summary>
public sealed class ProtocolTests(ProtocolDaemonFixture fixture) : IClassFixture<ProtocolDaemonFixture>
{
    private HttpClient Client => fixture.Client;

    [Fact(Timeout = 120_000)]
    public async Task Kevin_runs_a_whole_job_in_json_mode_with_its_exact_handshake()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var kevin = await fixture.ConnectAsync(ct);

        var machines = await kevin.KevinHandshakeAsync(sendLogin: true, ct);

        // Section id → [backend class, name]; Kevin groups by name and selects a section id.
        foreach (var id in ProtocolDaemonFixture.SectionIds)
        {
            machines[id]!.AsArray().Select(n => n!.GetValue<string>()).Should().Equal("Custom", ProtocolDaemonFixture.PoolName);
        }

        var section = machines.Where(m => m.Value![1]!.GetValue<string>() == ProtocolDaemonFixture.PoolName).Select(m => m.Key).Last();
        var (runId, info, output) = await kevin.KevinJobAsync(section, fixture.Ssh.ClientKeyPath, "echo job-ran-as-$(id -un)", ct);

        output.Should().Be($"job-ran-as-{fixture.Ssh.User}");
        info["ssh_host"]!.GetValue<string>().Should().Be("127.0.0.1", "ssh_host = localhost is answered as an address");
        info["ssh_user"]!.GetValue<string>().Should().Be(fixture.Ssh.User);
        info["ssh_known_host_key"]!.GetValue<string>().Should().Be(fixture.Ssh.HostKey.PublicKeyLine);
        (await MachinesOfRunAsync(runId, ct)).Should().BeEmpty("Cleanup deleted the machine");
        ProcessTable.WithArgument($"-p {info["ssh_port"]} ").Should().BeEmpty();
    }

    [Fact(Timeout = 60_000)]
    public async Task A_machine_made_over_the_protocol_is_an_ordinary_machine_of_the_peer()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var kevin = await fixture.ConnectAsync(ct);
        await kevin.KevinHandshakeAsync(sendLogin: true, ct);

        var runId = (await kevin.QueryAsync("""{"name": "kevin-sshd-1", "class": "Select"}""", ct))["run_id"]!.GetValue<long>();
        var machine = (await MachinesOfRunAsync(runId, ct)).Should().ContainSingle().Subject;

        machine["template"]!.GetValue<string>().Should().Be(ProtocolDaemonFixture.PoolName);
        machine["state"]!.GetValue<string>().Should().Be("prepared");
        machine["owner_uid"]!.GetValue<int>().Should().Be((int)Falk.Core.Unix.UnixAccounts.EffectiveUid);
        await kevin.QueryAsync($$"""{"run_id": {{runId}}, "class": "Launch"}""", ct);
        (await Client.StateAsync(machine["id"]!.GetValue<string>(), ct)).Should().Be("running");
        var status = await kevin.ExpectAsync($$"""{"run_id": {{runId}}, "class": "Status"}""", "VMStatus", ct, "run_id", "running");
        status["running"]!.GetValue<bool>().Should().BeTrue();
    }

    [Fact(Timeout = 60_000)]
    public async Task A_person_types_a_session_in_text_mode()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var person = await fixture.ConnectAsync(ct);

        (await person.TextAsync("help", ct)).Should().Be("error msg='not logged in'");
        (await person.TextAsync("login alice", ct)).Should().Be("welcome msg='hi alice!' name=test-falk");
        (await person.TextAsync("login alice", ct)).Should().Be("error msg='tried logging in again'");
        var help = await person.TextAsync("help", ct);
        help.Should().Be("helptext text='", "the help text starts with a newline and runs over several lines, in one quoted value");
        var helpLines = new List<string>();
        do
        {
            helpLines.Add(await person.ReadLineAsync(ct) ?? throw new InvalidOperationException("EOF inside the help text"));
        }
        while (!helpLines[^1].EndsWith('\''));

        helpLines[0].Should().Be("falk shell");
        (await person.TextAsync("list", ct)).Should().Be(
            "machinelist machines='{'\"'\"'kevin-sshd-1'\"'\"': ['\"'\"'Custom'\"'\"', '\"'\"'sshd-pool'\"'\"'], '\"'\"'kevin-sshd-2'\"'\"': ['\"'\"'Custom'\"'\"', '\"'\"'sshd-pool'\"'\"']}'");
        var runId = long.Parse(TextAnswer.Parse(await person.TextAsync("select kevin-sshd-2", ct)).Fields["run_id"], System.Globalization.CultureInfo.InvariantCulture);
        (await person.TextAsync("status", ct)).Should().Be($"vmstatus run_id={runId} running=False");
        (await person.TextAsync($"prepare run_id={runId} manage=False", ct)).Should().Be("ok msg=''");
        (await person.TextAsync("launch", ct)).Should().Be("ok msg=''");
        (await person.TextAsync($"status {runId}", ct)).Should().Be($"vmstatus run_id={runId} running=True");
        var info = TextAnswer.Parse(await person.TextAsync("getconnectioninfo", ct));
        info.Command.Should().Be("connectioninfo");
        info.Fields.Should().Equal(new Dictionary<string, string>
        {
            ["ssh_user"] = fixture.Ssh.User,
            ["ssh_host"] = "127.0.0.1",
            ["ssh_port"] = info.Fields["ssh_port"],
            ["ssh_known_host_key"] = fixture.Ssh.HostKey.PublicKeyLine,
        });
        (await person.TextAsync("shutdownwait 30", ct)).Should().StartWith("error msg=", "ShutdownWait has no text form");
        (await person.TextAsync("terminate", ct)).Should().Be("ok msg=''");
        (await person.TextAsync("cleanup", ct)).Should().Be("ok msg=''");
        (await person.TextAsync("status", ct)).Should().Be("error msg='IndexError('\"'\"'No machine is currently selected.'\"'\"')'");
        (await person.TextAsync($"status {runId}", ct)).Should().Be($"error msg='KeyError({runId})'");
        (await MachinesOfRunAsync(runId, ct)).Should().BeEmpty();
    }

    [Fact(Timeout = 60_000)]
    public async Task Bad_lines_get_an_error_and_the_connection_stays_usable()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var kevin = await fixture.ConnectAsync(ct);
        await kevin.KevinHandshakeAsync(sendLogin: true, ct);

        string[] badLines =
        [
            "not json at all",
            "[1, 2]",
            """{"class": "Nope"}""",
            """{"name": "x"}""",
            """{"class": "Select"}""",
            """{"name": "kevin-sshd-1", "extra": 1, "class": "Select"}""",
            """{"run_id": "zero", "class": "Launch"}""",
            """{"run_id": 99999, "class": "Status"}""",
            """{"name": "no-such-section", "class": "Select"}""",
            """{"name": "../etc", "class": "Select"}""",
            """{"version": 1, "class": "Version"}""",
            """{"class": "Status"}""",
        ];
        foreach (var line in badLines)
        {
            var answer = await kevin.ExpectAsync(line, "Error", ct, "msg");
            answer["msg"]!.GetValue<string>().Should().NotBeEmpty();
        }

        await kevin.SendBytesAsync([0xff, 0xfe, (byte)'\n'], ct);
        (await kevin.ReadLineAsync(ct)).Should().StartWith("{\"msg\": \"UnicodeDecodeError");
        (await kevin.QueryAsync("""{"run_id": 99999, "class": "Status"}""", ct))["msg"]!.GetValue<string>().Should().Be("KeyError(99999)");
        (await kevin.QueryAsync("""{"name": "no-such-section", "class": "Select"}""", ct))["msg"]!.GetValue<string>().Should().Be("KeyError('no-such-section')");
        (await kevin.QueryAsync("""{"version": 1, "class": "Version"}""", ct))["msg"]!.GetValue<string>().Should().Be("failed: unmatching versions: you=1 != us=0");

        await kevin.ExpectAsync("""{"version": 0, "class": "Version"}""", "OK", ct, "msg");
        await kevin.ExpectAsync("""{"class": "List"}""", "MachineList", ct, "machines");
    }

    [Fact(Timeout = 60_000)]
    public async Task An_over_long_line_is_refused_and_the_connection_closed()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var client = await fixture.ConnectAsync(ct);
        (await client.TextAsync("login kevin", ct)).Should().StartWith("welcome ");

        var chunk = Encoding.ASCII.GetBytes(new string('x', 1024 * 1024));
        var sending = Task.Run(async () =>
        {
            try
            {
                for (var i = 0; i < 9; i++)
                {
                    await client.SendBytesAsync(chunk, ct);
                }
            }
            catch (IOException)
            {
                // The daemon may close before the last megabyte is taken.
            }
        }, ct);

        (await client.ReadLineAsync(ct)).Should().Be("error msg='too much data.'");
        // Closed with the client's bytes unread: a Unix socket reports that as a reset rather than an EOF.
        string? after;
        try
        {
            after = await client.ReadLineAsync(ct);
        }
        catch (IOException)
        {
            after = null;
        }

        after.Should().BeNull("the daemon closes the connection after refusing the line");
        await sending;
    }

    [Fact(Timeout = 60_000)]
    public async Task A_dropped_connection_destroys_its_machines_within_a_second_and_only_its_machines()
    {
        var ct = TestContext.Current.CancellationToken;
        var dropped = await fixture.ConnectAsync(ct);
        await using var staying = await fixture.ConnectAsync(ct);
        await dropped.KevinHandshakeAsync(sendLogin: true, ct);
        await staying.KevinHandshakeAsync(sendLogin: true, ct);
        var droppedRuns = new List<long>();
        for (var i = 0; i < 2; i++)
        {
            var runId = (await dropped.QueryAsync("""{"name": "kevin-sshd-1", "class": "Select"}""", ct))["run_id"]!.GetValue<long>();
            await dropped.QueryAsync("""{"class": "Launch"}""", ct);
            droppedRuns.Add(runId);
        }

        var stayingRun = (await staying.QueryAsync("""{"name": "kevin-sshd-2", "class": "Select"}""", ct))["run_id"]!.GetValue<long>();
        await staying.QueryAsync("""{"class": "Launch"}""", ct);
        var restMachine = (await Client.CreateAsync(ProtocolDaemonFixture.PoolName, ct))["id"]!.GetValue<string>();
        var droppedPorts = new List<int>();
        foreach (var runId in droppedRuns)
        {
            droppedPorts.Add((await MachinesOfRunAsync(runId, ct)).Single()["ssh"]!["port"]!.GetValue<int>());
        }

        await dropped.DisposeAsync();
        var started = System.Diagnostics.Stopwatch.StartNew();
        await Wait.UntilAsync(async token =>
        {
            var left = 0;
            foreach (var runId in droppedRuns)
            {
                left += (await MachinesOfRunAsync(runId, token)).Count;
            }

            return left == 0 ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>($"{left} machines of the dropped connection left");
        }, TimeSpan.FromMilliseconds(50), TimeSpan.FromSeconds(5), "the dropped connection's machines to go", ct);
        TestContext.Current.SendDiagnosticMessage($"dropped connection's 2 machines gone after {started.ElapsedMilliseconds} ms");
        // How fast (the original: at once; ~30 ms here) is measured by `falk-bench protocol`, not asserted.

        droppedPorts.Should().AllSatisfy(port => ProcessTable.WithArgument($"-p {port} ").Should().BeEmpty());
        (await MachinesOfRunAsync(stayingRun, ct)).Should().ContainSingle().Which["state"]!.GetValue<string>().Should().Be("running");
        (await Client.StateAsync(restMachine, ct)).Should().Be("prepared");
        var status = await staying.ExpectAsync($$"""{"run_id": {{stayingRun}}, "class": "Status"}""", "VMStatus", ct, "run_id", "running");
        status["running"]!.GetValue<bool>().Should().BeTrue();
        await Client.DeleteMachineAsync(restMachine, ct);
    }

    [Fact(Timeout = 60_000)]
    public async Task Exit_and_a_client_error_end_the_connection_and_destroy_its_machines()
    {
        var ct = TestContext.Current.CancellationToken;
        foreach (var goodbye in new[] { """{"class": "Exit"}""", """{"msg": "bye", "class": "Error"}""" })
        {
            await using var kevin = await fixture.ConnectAsync(ct);
            await kevin.KevinHandshakeAsync(sendLogin: true, ct);
            var runId = (await kevin.QueryAsync("""{"name": "kevin-sshd-1", "class": "Select"}""", ct))["run_id"]!.GetValue<long>();

            await kevin.SendAsync(goodbye, ct);

            (await kevin.ReadLineAsync(ct)).Should().BeNull($"{goodbye} gets no answer; the daemon closes");
            await Wait.UntilAsync(async token => (await MachinesOfRunAsync(runId, token)).Count == 0 ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>("still listed"),
                TimeSpan.FromMilliseconds(50), TimeSpan.FromSeconds(5), "the machine to go", ct);
        }
    }

    [Fact(Timeout = 120_000)]
    public async Task Another_uid_cannot_touch_a_run_id_it_did_not_make()
    {
        var ct = TestContext.Current.CancellationToken;
        var other = await OtherUser.EnsureAsync(ct);
        File.SetUnixFileMode(fixture.Daemon.Directory.Path, (UnixFileMode)Convert.ToInt32("711", 8));
        File.SetUnixFileMode(fixture.Daemon.SocketPath, (UnixFileMode)Convert.ToInt32("777", 8));
        await using var owner = await fixture.ConnectAsync(ct);
        await owner.KevinHandshakeAsync(sendLogin: true, ct);
        var runId = (await owner.QueryAsync("""{"name": "kevin-sshd-1", "class": "Select"}""", ct))["run_id"]!.GetValue<long>();
        await owner.QueryAsync("""{"class": "Launch"}""", ct);

        // The other user speaks through falk shell, which logs in as it: the daemon sees its uid.
        await using (var intruder = LegacyProtocolClient.Spawn(
            ["setpriv", $"--reuid={other.Uid}", $"--regid={other.Gid}", "--clear-groups", "--", FalkCommand.Executable, "--socket", fixture.Daemon.SocketPath, "shell"],
            new Dictionary<string, string> { ["HOME"] = "/tmp", ["DOTNET_CLI_HOME"] = "/tmp" }))
        {
            (await intruder.ReadLineAsync(ct)).Should().Be($"welcome msg='hi {OtherUser.Name}!' name=test-falk");
            foreach (var request in new[] { "status", "launch", "getconnectioninfo", "terminate", "cleanup", "prepare" })
            {
                (await intruder.TextAsync($"{request} {runId}", ct)).Should().Be($"error msg='KeyError({runId})'", request);
            }

            // What it makes itself is its own.
            var own = TextAnswer.Parse(await intruder.TextAsync("select kevin-sshd-2", ct)).Fields["run_id"];
            var machine = (await MachinesOfRunAsync(long.Parse(own, System.Globalization.CultureInfo.InvariantCulture), ct)).Should().ContainSingle().Subject;
            machine["owner_uid"]!.GetValue<int>().Should().Be(other.Uid);
            (await intruder.TextAsync($"cleanup {own}", ct)).Should().Be("ok msg=''");
        }

        (await MachinesOfRunAsync(runId, ct)).Should().ContainSingle().Which["state"]!.GetValue<string>().Should().Be("running");
        (await owner.QueryAsync($$"""{"run_id": {{runId}}, "class": "Status"}""", ct))["running"]!.GetValue<bool>().Should().BeTrue();
    }

    [Fact(Timeout = 120_000)]
    public async Task Http_and_protocol_clients_share_the_socket_at_the_same_time()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var kevin = await fixture.ConnectAsync(ct);
        await kevin.KevinHandshakeAsync(sendLogin: true, ct);

        var http = Task.Run(async () =>
        {
            var ids = new List<string>();
            for (var i = 0; i < 3; i++)
            {
                var id = (await Client.CreateAsync(ProtocolDaemonFixture.PoolName, ct))["id"]!.GetValue<string>();
                ids.Add(id);
                using var info = await Client.GetAsync("v1/info", ct);
                info.StatusCode.Should().Be(HttpStatusCode.OK);
            }

            return ids;
        }, ct);
        var protocol = Task.Run(async () =>
        {
            for (var i = 0; i < 3; i++)
            {
                var runId = (await kevin.ExpectAsync("""{"name": "kevin-sshd-2", "class": "Select"}""", "RunID", ct, "run_id"))["run_id"]!.GetValue<long>();
                await kevin.ExpectAsync("""{"class": "Launch"}""", "OK", ct, "msg");
                await kevin.ExpectAsync($$"""{"run_id": {{runId}}, "class": "Terminate"}""", "OK", ct, "msg");
                await kevin.ExpectAsync($$"""{"run_id": {{runId}}, "class": "Cleanup"}""", "OK", ct, "msg");
            }
        }, ct);

        await Task.WhenAll(http, protocol);
        foreach (var id in await http)
        {
            await Client.DeleteMachineAsync(id, ct);
        }
    }

    [Fact(Timeout = 120_000)]
    public async Task A_pool_name_and_section_ids_work_over_rest()
    {
        var ct = TestContext.Current.CancellationToken;

        var byName = await Client.CreateAsync(ProtocolDaemonFixture.PoolName, ct);
        var bySection = await Client.CreateAsync("kevin-sshd-2", ct);
        var booted = await Client.BootAsync(byName["id"]!.GetValue<string>(), ct);

        booted["template"]!.GetValue<string>().Should().Be(ProtocolDaemonFixture.PoolName);
        bySection["template"]!.GetValue<string>().Should().Be(ProtocolDaemonFixture.PoolName);
        booted["ssh"]!["known_host_key"]!.GetValue<string>().Should().Be(fixture.Ssh.HostKey.PublicKeyLine);
        using var template = await Client.GetAsync("v1/templates/kevin-sshd-2", ct);
        (await template.JsonAsync(ct))["id"]!.GetValue<string>().Should().Be("kevin-sshd-2");
        await Client.DeleteMachineAsync(byName["id"]!.GetValue<string>(), ct);
        await Client.DeleteMachineAsync(bySection["id"]!.GetValue<string>(), ct);
    }

    private async Task<List<JsonNode>> MachinesOfRunAsync(long runId, CancellationToken ct) =>
        (await Client.ListAsync(ct)).Select(m => m!).Where(m => m["labels"]?["protocol.run_id"]?.GetValue<string>() == runId.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToList();
}

/// <summary>A real second Unix user for access tests, made once as a system user without a home or login shell.</summary>
public static class OtherUser
{
    public const string Name = "falk-proto-test";

    public static async Task<(int Uid, int Gid)> EnsureAsync(CancellationToken ct)
    {
        if (Falk.Core.Unix.UnixAccounts.ResolveUser(Name) is null)
        {
            try
            {
                await new ProcessRunner().RunAsync(new ProcessSpec(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", Name]), TimeSpan.FromSeconds(30), ct);
            }
            catch (ProcessFailedException) when (Falk.Core.Unix.UnixAccounts.ResolveUser(Name) is not null)
            {
                // Another test made it meanwhile.
            }
        }

        var uid = Falk.Core.Unix.UnixAccounts.ResolveUser(Name)!.Value;
        var gid = Falk.Core.Unix.UnixAccounts.ResolveGroup(Name)!.Value;
        return (uid, gid);
    }
}
