namespace Falk.Tests.Fixtures;

/// <summary>
/// One falkd for a test class, with custom templates that run Debian's sshd: <c>sshd</c> pins the right host key,
/// <c>sshd-wrong-key</c> pins another one, <c>sshd-unpinned</c> pins none.
/// </summary>
public sealed class SshdDaemonFixture : IAsyncLifetime
{
    private TempDirectory? _keys;

    public FalkDaemon Daemon { get; private set; } = null!;

    public SshServerFiles Ssh { get; private set; } = null!;

    public HttpClient Client => Daemon.Client;

    public async ValueTask InitializeAsync()
    {
        var ct = TestContext.Current.CancellationToken;
        _keys = new TempDirectory();
        Ssh = await SshServerFiles.CreateAsync(_keys.Path, ct);
        var otherKey = await SshServerFiles.CreateAsync(System.IO.Directory.CreateDirectory(_keys.File("other")).FullName, ct);
        Daemon = await FalkDaemon.StartAsync($"""
            [sshd]
            type = custom
            launch = {Ssh.LaunchCommand}
            ssh_user = {Ssh.User}
            ssh_host = 127.0.0.1
            ssh_known_host_key_file = {Ssh.HostPublicKeyPath}

            [sshd-wrong-key]
            type = custom
            launch = {Ssh.LaunchCommand}
            ssh_user = {Ssh.User}
            ssh_host = 127.0.0.1
            ssh_known_host_key_file = {otherKey.HostPublicKeyPath}

            [sshd-unpinned]
            type = custom
            launch = {Ssh.LaunchCommand}
            ssh_user = {Ssh.User}
            ssh_host = 127.0.0.1
            """, ct);
    }

    public async ValueTask DisposeAsync()
    {
        if (Daemon is not null)
        {
            await Daemon.DisposeAsync();
        }

        _keys?.Dispose();
    }
}
