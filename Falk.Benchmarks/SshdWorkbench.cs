using Falk.Client;
using Falk.Core.Processes;
using Falk.Core.Ssh;
using Falk.Tests.Fixtures;

namespace Falk.Benchmarks;

/// <summary>
/// A falkd of this build in a temporary folder with one custom template, <c>sshd</c>, that runs Debian's sshd
/// on the machine's port with a host key made here (pinned by the template).
/// </summary>
internal sealed class SshdWorkbench : IAsyncDisposable
{
    private SshdWorkbench(string work, string socket, HttpClient client, RunningProcess daemon, string sshdConfig, HostKey hostKey)
    {
        Work = work;
        Socket = socket;
        Client = client;
        Daemon = daemon;
        SshdConfig = sshdConfig;
        HostKey = hostKey;
    }

    public string Work { get; }

    /// <summary>falkd's control socket.</summary>
    public string Socket { get; }

    public HttpClient Client { get; }

    public RunningProcess Daemon { get; }

    public string SshdConfig { get; }

    public HostKey HostKey { get; }

    /// <param name="ports">The vm_ports range, e.g. <c>[27800,27899]</c>.</param>
    /// <param name="daemonLog">A file that gets falkd's output (kept after the bench), or null for none.</param>
    /// <param name="poolSize">When above 0, a second template <c>warm</c>, the same as <c>sshd</c> with a warm pool of this size.</param>
    public static async Task<SshdWorkbench> StartAsync(string ports, CancellationToken cancellationToken, TextWriter? daemonLog = null, int poolSize = 0)
    {
        var work = WorkFolder.Create();
        try
        {
            var (config, socket, hostKey, sshdConfig) = await WriteConfigAsync(work, ports, cancellationToken, poolSize);
            var client = FalkHttp.CreateClient(socket, TimeSpan.FromMinutes(2));
            var daemon = await LocalFalkd.StartAsync(config, client, daemonLog is null ? null : daemonLog.WriteLine, cancellationToken);
            var key = HostKey.TryParse(await File.ReadAllTextAsync(hostKey + ".pub", cancellationToken), out _)!;
            return new SshdWorkbench(work, socket, client, daemon, sshdConfig, key);
        }
        catch
        {
            Directory.Delete(work, recursive: true);
            throw;
        }
    }

    /// <summary>Writes the sshd host key, sshd_config and falk.conf into <paramref name="work"/>.</summary>
    public static async Task<(string Config, string Socket, string HostKey, string SshdConfig)> WriteConfigAsync(string work, string ports, CancellationToken cancellationToken, int poolSize = 0)
    {
        var hostKey = Path.Combine(work, "host_key");
        await new ProcessRunner().RunAsync(new ProcessSpec(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey]), TimeSpan.FromSeconds(30), cancellationToken);
        Directory.CreateDirectory("/run/sshd");
        var sshdConfig = Path.Combine(work, "sshd_config");
        await File.WriteAllTextAsync(sshdConfig, $"HostKey {hostKey}\nListenAddress 127.0.0.1\nPidFile none\nUsePAM no\nSetEnv PYENV_REHASH_TIMEOUT=0\n", cancellationToken);
        var socket = Path.Combine(work, "falk.sock");
        var config = Path.Combine(work, "falk.conf");
        var template = $"""
            type = custom
            launch = /usr/sbin/sshd -D -e -p {"{SSHPORT}"} -f {sshdConfig}
            ssh_user = root
            ssh_host = 127.0.0.1
            ssh_known_host_key_file = {hostKey}.pub
            """;
        await File.WriteAllTextAsync(config, $"""
            [falk]
            control_socket = {socket}
            state_dir = {Path.Combine(work, "state")}
            vm_ports = {ports}
            on_shutdown = destroy
            [sshd]
            {template}
            {(poolSize > 0 ? $"[warm]\n{template}\npool_size = {poolSize}" : string.Empty)}
            """, cancellationToken);
        return (config, socket, hostKey, sshdConfig);
    }

    public async ValueTask DisposeAsync()
    {
        await Daemon.StopAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
        await Daemon.DisposeAsync();
        Client.Dispose();
        Directory.Delete(Work, recursive: true);
    }
}
