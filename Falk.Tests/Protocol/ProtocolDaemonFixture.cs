using Falk.Tests.Fixtures;

namespace Falk.Tests.Protocol;

/// <summary>
/// One falkd whose config is written as an original falk.conf for Kevin: two sections of Debian's real sshd
/// sharing the name <c>sshd-pool</c>, section ids that differ from it, <c>ssh_host = localhost</c>.
/// </summary>
public sealed class ProtocolDaemonFixture : IAsyncLifetime
{
    private TempDirectory? _keys;

    public FalkDaemon Daemon { get; private set; } = null!;

    public SshServerFiles Ssh { get; private set; } = null!;

    public HttpClient Client => Daemon.Client;

    public static string[] SectionIds => ["kevin-sshd-1", "kevin-sshd-2"];

    public const string PoolName = "sshd-pool";

    public async ValueTask InitializeAsync()
    {
        var ct = TestContext.Current.CancellationToken;
        _keys = new TempDirectory();
        Ssh = await SshServerFiles.CreateAsync(_keys.Path, ct);
        Daemon = await FalkDaemon.StartAsync(string.Join("\n", SectionIds.Select(id => $"""
            [{id}]
            name = {PoolName}
            type = custom
            launch = {Ssh.LaunchCommand}
            ssh_user = {Ssh.User}
            ssh_host = localhost
            ssh_known_host_key_file = {Ssh.HostPublicKeyPath}

            """)), ct, name: "test-falk", ports: 20);
    }

    public Task<LegacyProtocolClient> ConnectAsync(CancellationToken ct) => LegacyProtocolClient.ConnectAsync(Daemon.SocketPath, ct);

    public async ValueTask DisposeAsync()
    {
        if (Daemon is not null)
        {
            await Daemon.DisposeAsync();
        }

        _keys?.Dispose();
    }
}
