using Falk.Core.Processes;
using Falk.Core.Ssh;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Ssh;

public sealed class HostKeyTests
{
    [Fact(Timeout = 30_000)]
    public async Task The_fingerprint_is_the_one_ssh_keygen_prints()
    {
        var ct = TestContext.Current.CancellationToken;
        using var dir = new TempDirectory();
        var runner = new ProcessRunner();
        foreach (var type in new[] { "ed25519", "rsa", "ecdsa" })
        {
            var path = dir.File($"key_{type}");
            await runner.RunAsync(new ProcessSpec(["ssh-keygen", "-q", "-t", type, "-N", "", "-f", path]), TimeSpan.FromSeconds(30), ct);
            var printed = (await runner.RunAsync(new ProcessSpec(["ssh-keygen", "-l", "-E", "sha256", "-f", path + ".pub"]), TimeSpan.FromSeconds(30), ct)).StdoutTail;

            var key = HostKey.TryParse(File.ReadAllText(path + ".pub"), out var problem);

            problem.Should().BeNull();
            printed.Split(' ')[1].Should().Be(key!.FingerprintSha256, type);
        }
    }

    [Theory]
    [InlineData("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKj4Bx1THcLfzCUjcnYG8WPZ7XGZcHnG9nV01iP8Zdhg root@host")]
    [InlineData("[localhost]:7888 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKj4Bx1THcLfzCUjcnYG8WPZ7XGZcHnG9nV01iP8Zdhg")]
    [InlineData("|1|abc=|def= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKj4Bx1THcLfzCUjcnYG8WPZ7XGZcHnG9nV01iP8Zdhg")]
    public void Pub_and_known_hosts_lines_parse_to_the_same_key(string line)
    {
        var key = HostKey.TryParse(line, out _);

        key!.PublicKeyLine.Should().Be("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKj4Bx1THcLfzCUjcnYG8WPZ7XGZcHnG9nV01iP8Zdhg");
        key.KnownHostsLine("127.0.0.1", 7888).Should().Be("[127.0.0.1]:7888 " + key.PublicKeyLine);
        key.KnownHostsLine("vm", 22).Should().Be("vm " + key.PublicKeyLine);
    }

    [Theory]
    [InlineData("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIKj4Bx1THcLfzCUjcnYG8WPZ7XGZcHnG9nV01iP8Zdhg", "the key data says 'ssh-ed25519'")]
    [InlineData("just some text", "no SSH public key found")]
    [InlineData("ssh-ed25519 !!!", "not valid base64")]
    public void Lines_that_are_not_keys_say_why(string line, string problem)
    {
        HostKey.TryParse(line, out var reason).Should().BeNull();
        reason.Should().Contain(problem);
    }

    [Fact]
    public void RSA_keys_accept_the_sha2_signature_algorithms_too()
    {
        var key = new HostKey("ssh-rsa", [0, 0, 0, 7, .. "ssh-rsa"u8.ToArray()]);
        key.Algorithms.Should().Equal("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa");
    }
}
