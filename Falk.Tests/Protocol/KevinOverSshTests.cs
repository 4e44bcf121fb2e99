using System.Net.Sockets;
using Falk.Core.Processes;
using Falk.Core.Waiting;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Protocol;

/// <summary>
/// Kevin with an <c>ssh://</c> falk entry: a real OpenSSH login on localhost whose key is restricted to
/// <c>command="falk shell"</c> in authorized_keys; Kevin runs ssh with no remote command and speaks the protocol.
/// </summary>
public sealed class KevinOverSshTests(ProtocolDaemonFixture fixture) : IClassFixture<ProtocolDaemonFixture>
{
    [Fact(Timeout = 180_000)]
    public async Task Kevin_runs_a_whole_job_through_falk_shell_forced_by_authorized_keys()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var front = await FalkHost.StartAsync(fixture.Daemon.SocketPath, ct);

        await using (var kevin = LegacyProtocolClient.Spawn(front.KevinSsh()))
        {
            // falk shell sent the Login: Kevin begins by reading Welcome.
            var machines = await kevin.KevinHandshakeAsync(sendLogin: false, ct);
            machines.Select(m => m.Key).Should().BeEquivalentTo(ProtocolDaemonFixture.SectionIds);
            var (_, info, output) = await kevin.KevinJobAsync("kevin-sshd-1", fixture.Ssh.ClientKeyPath, "echo job-over-ssh", ct);
            output.Should().Be("job-over-ssh");
            info["ssh_host"]!.GetValue<string>().Should().Be("127.0.0.1");
        }

        // The key is good for falk only: a command asked for is ignored, the protocol answers.
        await using (var curious = LegacyProtocolClient.Spawn([.. front.KevinSsh(), "cat", "/etc/shadow"]))
        {
            (await curious.ReadLineAsync(ct)).Should().StartWith("welcome msg='hi kevin!'");
        }
    }

    [Fact(Timeout = 180_000)]
    public async Task Killing_kevins_ssh_destroys_the_machines_of_that_session()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var front = await FalkHost.StartAsync(fixture.Daemon.SocketPath, ct);
        var kevin = LegacyProtocolClient.Spawn(front.KevinSsh());
        await kevin.KevinHandshakeAsync(sendLogin: false, ct);
        var runId = (await kevin.QueryAsync("""{"name": "kevin-sshd-2", "class": "Select"}""", ct))["run_id"]!.GetValue<long>();
        await kevin.ExpectAsync("""{"class": "Launch"}""", "OK", ct, "msg");
        var label = runId.ToString(System.Globalization.CultureInfo.InvariantCulture);
        (await fixture.Client.ListAsync(ct)).Should().Contain(m => m!["labels"]!["protocol.run_id"]!.GetValue<string>() == label);

        // Kevin kills ssh when an answer is late; the session's end reaches the daemon as an EOF.
        kevin.Process!.Kill();
        await kevin.DisposeAsync();

        await Wait.UntilAsync(async token => (await fixture.Client.ListAsync(token)).Any(m => m!["labels"]?["protocol.run_id"]?.GetValue<string>() == label)
                ? ProbeOutcome.NotYet<bool>("still listed") : ProbeOutcome.Done(true),
            TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(10), "the machine of the killed session to go", ct);
    }
}

/// <summary>
/// A Falk host as the README sets it up for Kevin: a private sshd on a free port whose authorized_keys restricts
/// Kevin's key to <c>falk shell</c>.
/// </summary>
public sealed class FalkHost : IAsyncDisposable
{
    private readonly TempDirectory _directory;
    private readonly RunningProcess _sshd;

    private FalkHost(TempDirectory directory, SshServerFiles files, RunningProcess sshd, int port, string knownHosts)
    {
        _directory = directory;
        Files = files;
        _sshd = sshd;
        Port = port;
        KnownHosts = knownHosts;
    }

    public SshServerFiles Files { get; }

    public int Port { get; }

    public string KnownHosts { get; }

    public static async Task<FalkHost> StartAsync(string falkSocket, CancellationToken ct)
    {
        var directory = new TempDirectory();
        var files = await SshServerFiles.CreateAsync(directory.Path, ct);
        var clientKey = (await File.ReadAllTextAsync(files.ClientKeyPath + ".pub", ct)).Trim();
        await File.WriteAllTextAsync(Path.Combine(directory.Path, "authorized_keys"),
            $"command=\"{FalkCommand.Executable} --socket {falkSocket} shell kevin\",no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding {clientKey}\n", ct);
        var port = TestPorts.NextRange(1).First;
        var knownHosts = Path.Combine(directory.Path, "kevin_known_hosts");
        await File.WriteAllTextAsync(knownHosts, $"[127.0.0.1]:{port} {files.HostKey.PublicKeyLine}\n", ct);
        var sshd = RunningProcess.Start(new ProcessSpec(["/usr/sbin/sshd", "-D", "-e", "-p", port.ToString(System.Globalization.CultureInfo.InvariantCulture), "-f", files.ConfigPath]));
        var host = new FalkHost(directory, files, sshd, port, knownHosts);
        await Wait.UntilAsync(async token =>
        {
            if (sshd.HasExited)
            {
                throw new InvalidOperationException($"sshd ended: {sshd.OutputTail()}");
            }

            using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                await probe.ConnectAsync("127.0.0.1", port, token);
                return ProbeOutcome.Done(true);
            }
            catch (SocketException e)
            {
                return ProbeOutcome.NotYet<bool>(e.Message);
            }
        }, TimeSpan.FromMilliseconds(50), TimeSpan.FromSeconds(20), "the Falk host's sshd to listen", ct);
        return host;
    }

    /// <summary>Kevin's FalkSSH command: ssh with the host key pinned, no remote command, over pipes.</summary>
    public string[] KevinSsh() =>
    [
        "ssh", "-q", "-o", $"UserKnownHostsFile={KnownHosts}", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
        "-i", Files.ClientKeyPath, "-p", Port.ToString(System.Globalization.CultureInfo.InvariantCulture), $"{Files.User}@127.0.0.1", "--",
    ];

    public async ValueTask DisposeAsync()
    {
        await _sshd.StopAsync(TimeSpan.FromSeconds(5), CancellationToken.None);
        await _sshd.DisposeAsync();
        _directory.Dispose();
    }
}
