using System.Net.Sockets;
using Falk.Core.Config;
using Falk.Core.Unix;

namespace Falk.Api.Hosting;

/// <summary>The daemon's Unix domain socket: claiming its path, binding it with the configured mode and group, removing it.</summary>
internal static class ControlSocket
{
    /// <summary>
    /// Makes the socket's folder and clears a stale socket file. Throws <see cref="InvalidOperationException"/>
    /// with a readable message when another daemon still answers on it or the path is not a socket.
    /// </summary>
    public static void Claim(string path)
    {
        var directory = Path.GetDirectoryName(path);
        if (!string.IsNullOrEmpty(directory))
        {
            Directory.CreateDirectory(directory);
        }

        // lstat, never open: a FIFO would block the open, a symbolic link would be followed.
        switch (UnixFiles.Lstat(path).Kind)
        {
            case NodeKind.Missing:
                return;
            case NodeKind.Socket when Answers(path):
                throw new InvalidOperationException($"another daemon is already listening on {path}; stop it first or use another control_socket");
            case NodeKind.Socket:
                File.Delete(path);
                return;
            case var kind:
                throw new InvalidOperationException($"{path} exists and is not a socket ({Describe(kind)}); refusing to replace it");
        }
    }

    /// <summary>
    /// Binds the socket and gives it its mode and group before Kestrel calls listen(): until then a connect
    /// is refused, so no client ever sees the socket with other permissions. The mode and group are set on the
    /// socket itself, never on what a swapped path points to (see <see cref="UnixFiles.BindSocket"/>).
    /// </summary>
    public static Socket Bind(DaemonOptions options, int? groupId) =>
        UnixFiles.BindSocket(options.ControlSocket, options.ControlSocketPermissions, groupId);

    /// <summary>Removes the socket file unless another daemon has taken the path over meanwhile.</summary>
    public static bool Remove(string path)
    {
        if (!File.Exists(path) || Answers(path))
        {
            return false;
        }

        File.Delete(path);
        return true;
    }

    private static string Describe(NodeKind kind) => kind switch
    {
        NodeKind.SymbolicLink => "a symbolic link",
        NodeKind.Fifo => "a FIFO",
        NodeKind.Directory => "a folder",
        NodeKind.Regular => "a file",
        _ => "a special file",
    };

    private static bool Answers(string path)
    {
        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(path));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
