using System.Text.Json.Nodes;
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
}
