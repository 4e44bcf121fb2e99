using Falk.Core.Processes;
using Falk.Core.Ssh;

namespace Falk.Tests.Fixtures;

/// <summary>
/// Keys and a config for Debian's real sshd, made fresh by ssh-keygen: a host key the test pins and a
/// client key for the login. The sshd runs as a custom template's launch command.
/// </summary>
public sealed class SshServerFiles
{
    private SshServerFiles(string directory, HostKey hostKey, string user)
    {
        Directory = directory;
        HostKey = hostKey;
        User = user;
    }

    public string Directory { get; }

    public HostKey HostKey { get; }

    public string HostPublicKeyPath => Path.Combine(Directory, "ssh_host_ed25519_key.pub");

    public string ClientKeyPath => Path.Combine(Directory, "client_ed25519");

    public string ConfigPath => Path.Combine(Directory, "sshd_config");

    /// <summary>The user the machine is logged in as: whoever runs the tests (sshd can only switch users as root).</summary>
    public string User { get; }

    /// <summary>The custom template's launch line; the config path makes the process easy to find in the process table.</summary>
    public string LaunchCommand => $"/usr/sbin/sshd -D -e -p {{SSHPORT}} -f {ConfigPath}";

    /// <param name="listenAddresses">Where sshd listens; 127.0.0.1 unless given.</param>
    public static async Task<SshServerFiles> CreateAsync(string directory, CancellationToken cancellationToken, IReadOnlyList<string>? listenAddresses = null)
    {
        var listen = string.Join("\n", (listenAddresses ?? ["127.0.0.1"]).Select(a => "ListenAddress " + a));
        var runner = new ProcessRunner();
        var hostKeyPath = Path.Combine(directory, "ssh_host_ed25519_key");
        var clientKeyPath = Path.Combine(directory, "client_ed25519");
        await runner.RunAsync(new ProcessSpec(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "falk-test-host", "-f", hostKeyPath]), TimeSpan.FromSeconds(30), cancellationToken);
        await runner.RunAsync(new ProcessSpec(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "falk-test-client", "-f", clientKeyPath]), TimeSpan.FromSeconds(30), cancellationToken);
        File.Copy(clientKeyPath + ".pub", Path.Combine(directory, "authorized_keys"));

        if (Environment.UserName == "root")
        {
            // sshd insists on its privilege separation folder; the init script would make it.
            System.IO.Directory.CreateDirectory("/run/sshd");
        }

        // SetEnv: a login shell whose ~/.bashrc runs `pyenv rehash` (root's on the build hosts) waits up to 60 s for
        // pyenv's lock, which a session the tests kill mid-rehash leaves behind; bound that wait to a second.
        await File.WriteAllTextAsync(Path.Combine(directory, "sshd_config"), $"""
            HostKey {hostKeyPath}
            SetEnv PYENV_REHASH_TIMEOUT=0
            AuthorizedKeysFile {Path.Combine(directory, "authorized_keys")}
            {listen}
            PidFile none
            UsePAM no
            StrictModes no
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            PermitRootLogin prohibit-password
            """, cancellationToken);

        var hostKey = HostKey.TryParse(await File.ReadAllTextAsync(hostKeyPath + ".pub", cancellationToken), out _)!;
        return new SshServerFiles(directory, hostKey, Environment.UserName);
    }
}
