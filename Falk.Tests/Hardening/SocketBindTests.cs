using Falk.Core.Unix;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Hardening;

/// <summary>
/// Issue 13 item 7, the step a running daemon cannot show: whatever appears at the socket path between the daemon's
/// check and its bind (here a symbolic link to a root-only file) is neither followed nor replaced.
/// </summary>
public sealed class SocketBindTests
{
    [Fact]
    public void A_path_taken_over_before_the_bind_is_left_alone_and_its_target_keeps_its_mode()
    {
        using var dir = new TempDirectory();
        var victim = dir.File("shadow");
        File.WriteAllText(victim, "secret");
        File.SetUnixFileMode(victim, UnixFileMode.UserRead);
        var path = dir.File("falk.sock");
        File.CreateSymbolicLink(path, victim);

        var bind = () => UnixFiles.BindSocket(path, (UnixFileMode)Convert.ToInt32("777", 8), groupId: 65534);

        bind.Should().Throw<IOException>().WithMessage($"cannot move the socket into place at {path}: *");
        UnixFiles.Lstat(path).Kind.Should().Be(NodeKind.SymbolicLink);
        File.GetUnixFileMode(victim).Should().Be(UnixFileMode.UserRead);
        UnixFiles.Stat(victim).Uid.Should().Be(0);
        Directory.GetFileSystemEntries(dir.Path).Select(Path.GetFileName).Should().BeEquivalentTo(["shadow", "falk.sock"], "the private bind folder is removed");
    }

    [Fact]
    public void A_bound_socket_has_its_mode_and_group_and_accepts_connections()
    {
        using var dir = new TempDirectory();
        var path = dir.File("falk.sock");

        using var socket = UnixFiles.BindSocket(path, (UnixFileMode)Convert.ToInt32("660", 8), groupId: 65534);
        socket.Listen();

        var status = UnixFiles.Lstat(path);
        status.Kind.Should().Be(NodeKind.Socket);
        status.Mode.Should().Be((UnixFileMode)Convert.ToInt32("660", 8));
        using var client = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
        client.Connect(new System.Net.Sockets.UnixDomainSocketEndPoint(path));
        Directory.GetFileSystemEntries(dir.Path).Should().ContainSingle();
    }
}
