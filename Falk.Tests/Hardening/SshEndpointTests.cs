using System.Net;
using System.Net.Sockets;
using Falk.Core.Processes;
using Falk.Core.Ssh;
using Falk.Core.Unix;
using Falk.Core.Waiting;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Hardening;

/// <summary>
/// A local user who runs an SSH server of their own on a machine's port, on <c>[::1]</c> and <c>127.0.0.1</c>, before
/// the machine boots: the job is never handed that server's key, and the machine fails naming the intruder. The
/// templates say <c>ssh_host = localhost</c>, which Falk hands out as 127.0.0.1 and nothing else.
/// </summary>
public sealed class SshEndpointTests : IAsyncLifetime
{
    private readonly TempDirectory _keys = new();
    private SshServerFiles _machineSsh = null!;
    private FalkDaemon _daemon = null!;

    private HttpClient Client => _daemon.Client;

    public async ValueTask InitializeAsync() => await StartDaemonAsync(ports: 10);

    private async Task StartDaemonAsync(int ports)
    {
        var ct = TestContext.Current.CancellationToken;
        if (_daemon is not null)
        {
            await _daemon.DisposeAsync();
        }

        _machineSsh ??= await SshServerFiles.CreateAsync(_keys.Path, ct);
        _daemon = await FalkDaemon.StartAsync($"""
            [pinned]
            type = custom
            launch = {_machineSsh.LaunchCommand}
            ssh_user = {_machineSsh.User}
            ssh_host = localhost
            ssh_known_host_key_file = {_machineSsh.HostPublicKeyPath}

            [unpinned]
            type = custom
            launch = {_machineSsh.LaunchCommand}
            ssh_user = {_machineSsh.User}
            ssh_host = localhost

            [proxied]
            type = custom
            launch = sleep 600
            ssh_user = {_machineSsh.User}
            ssh_host = localhost
            ssh_served_by_launch = no
            """, ct, ports: ports);
    }

    public async ValueTask DisposeAsync()
    {
        await _daemon.DisposeAsync();
        _keys.Dispose();
    }

    [Theory(Timeout = 120_000)]
    [InlineData("pinned")]
    [InlineData("unpinned")]
    public async Task A_server_squatting_the_port_on_both_loopbacks_before_boot_fails_the_machine_and_is_named(string template)
    {
        var ct = TestContext.Current.CancellationToken;
        var created = await Client.CreateAsync(template, ct);
        var id = created["id"]!.GetValue<string>();
        var port = created["ssh"]!["port"]!.GetValue<int>();
        created["ssh"]!["host"]!.GetValue<string>().Should().Be("127.0.0.1", "ssh_host = localhost is handed out as one literal address");
        await using var intruder = await Intruder.StartAsync(_keys.File("intruder-" + template), port, ["127.0.0.1", "::1"], ct);

        using var boot = await Client.PostAsync($"v1/machines/{id}/boot?wait=ssh&timeout=30", null, ct);

        var problem = await boot.ShouldBeProblemAsync(HttpStatusCode.BadGateway, "ssh-endpoint-taken", ct);
        problem["detail"]!.GetValue<string>().Should().Contain($"pid {intruder.Pid}").And.Contain("127.0.0.1:" + port);
        problem["intruder_pids"]!.AsArray().Select(p => p!.GetValue<int>()).Should().Contain(intruder.Pid);
        using var get = await Client.GetAsync($"v1/machines/{id}", ct);
        var machine = await get.JsonAsync(ct);
        machine["state"]!.GetValue<string>().Should().Be("failed");
        machine["last_error"]!.GetValue<string>().Should().Contain($"pid {intruder.Pid}");
        var ssh = machine["ssh"]!;
        ssh["known_host_key"]?.GetValue<string>().Should().NotBe(intruder.Files.HostKey.PublicKeyLine, "the intruder's key is never handed out");
        ssh["host_key_source"]!.GetValue<string>().Should().NotBe("observed");
        await Client.DeleteMachineAsync(id, ct);
    }

    [Fact(Timeout = 120_000)]
    public async Task A_server_on_the_ipv6_loopback_does_not_answer_for_the_machine_handed_out_on_ipv4()
    {
        var ct = TestContext.Current.CancellationToken;
        var created = await Client.CreateAsync("unpinned", ct);
        var id = created["id"]!.GetValue<string>();
        var port = created["ssh"]!["port"]!.GetValue<int>();
        await using var intruder = await Intruder.StartAsync(_keys.File("intruder-v6"), port, ["::1"], ct);

        var booted = await Client.BootAsync(id, ct);

        var ssh = booted["ssh"]!;
        ssh["host"]!.GetValue<string>().Should().Be("127.0.0.1");
        ssh["known_host_key"]!.GetValue<string>().Should().Be(_machineSsh.HostKey.PublicKeyLine, "the machine's own sshd answered, not the one on [::1]");
        ssh["known_hosts_line"]!.GetValue<string>().Should().Be($"[127.0.0.1]:{port} {_machineSsh.HostKey.PublicKeyLine}");
        await Client.DeleteMachineAsync(id, ct);
    }

    [Fact(Timeout = 120_000)]
    public async Task A_launch_that_hands_its_port_to_a_process_of_its_own_choosing_says_so_and_is_served_by_it()
    {
        var ct = TestContext.Current.CancellationToken;
        var created = await Client.CreateAsync("proxied", ct);
        var id = created["id"]!.GetValue<string>();
        await using var proxy = await Intruder.StartAsync(_keys.File("proxy"), created["ssh"]!["port"]!.GetValue<int>(), ["127.0.0.1"], ct);

        var booted = await Client.BootAsync(id, ct);

        booted["ssh"]!["known_host_key"]!.GetValue<string>().Should().Be(proxy.Files.HostKey.PublicKeyLine, "ssh_served_by_launch = no: the launch's processes are not the only ones that may serve");
        await Client.DeleteMachineAsync(id, ct);
    }

    [Fact(Timeout = 120_000)]
    public async Task A_port_someone_listens_on_at_the_ipv6_loopback_is_not_handed_out()
    {
        var ct = TestContext.Current.CancellationToken;
        await StartDaemonAsync(ports: 2);
        using var squatter = new Socket(AddressFamily.InterNetworkV6, SocketType.Stream, ProtocolType.Tcp);
        squatter.Bind(new IPEndPoint(IPAddress.IPv6Loopback, _daemon.Ports.First));
        squatter.Listen();

        var created = await Client.CreateAsync("unpinned", ct);

        created["ssh"]!["port"]!.GetValue<int>().Should().Be(_daemon.Ports.Last, "the first port of the range is held at [::1]");
        using var full = await Client.PostJsonAsync("v1/machines", new { template = "unpinned" }, ct);
        full.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable, "the last free port is the squatted one");
    }

    /// <summary>A real sshd with a key of its own, run by the test as "another local user" on a machine's port.</summary>
    private sealed class Intruder : IAsyncDisposable
    {
        private readonly RunningProcess _process;

        private Intruder(SshServerFiles files, RunningProcess process)
        {
            Files = files;
            _process = process;
        }

        public SshServerFiles Files { get; }

        public int Pid => _process.Pid;

        public static async Task<Intruder> StartAsync(string directory, int port, IReadOnlyList<string> addresses, CancellationToken ct)
        {
            Directory.CreateDirectory(directory);
            var files = await SshServerFiles.CreateAsync(directory, ct, addresses);
            var process = RunningProcess.Start(new ProcessSpec(["/usr/sbin/sshd", "-D", "-e", "-p", port.ToString(System.Globalization.CultureInfo.InvariantCulture), "-f", files.ConfigPath]));
            var intruder = new Intruder(files, process);
            await Wait.UntilAsync(
                _ => Task.FromResult(addresses.All(a => ListeningSockets.Reaching(IPAddress.Parse(a), port).Any(s => s.Address.Equals(IPAddress.Parse(a))))
                    ? ProbeOutcome.Done(true)
                    : process.HasExited ? throw new InvalidOperationException("the intruder's sshd ended: " + process.OutputTail()) : ProbeOutcome.NotYet<bool>("not listening yet")),
                TimeSpan.FromMilliseconds(50), TimeSpan.FromSeconds(20), $"the intruder's sshd on port {port}", ct);
            return intruder;
        }

        public async ValueTask DisposeAsync()
        {
            await _process.KillAsync(CancellationToken.None);
            await _process.DisposeAsync();
        }
    }
}
