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

        if (Directory.Exists(path) || IsOpenableFile(path))
        {
            throw new InvalidOperationException($"{path} exists and is not a socket; refusing to replace it");
        }

        if (!File.Exists(path))
        {
            return;
        }

        if (Answers(path))
        {
            throw new InvalidOperationException($"another daemon is already listening on {path}; stop it first or use another control_socket");
        }

        File.Delete(path);
    }

    /// <summary>
    /// Binds the socket and gives it its mode and group before Kestrel calls listen(): until then a connect
    /// is refused, so no client ever sees the socket with the umask's permissions.
    /// </summary>
    public static Socket Bind(UnixDomainSocketEndPoint endpoint, DaemonOptions options, int? groupId)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            socket.Bind(endpoint);
            File.SetUnixFileMode(options.ControlSocket, options.ControlSocketPermissions);
            if (groupId is { } gid)
            {
                UnixAccounts.ChangeGroup(options.ControlSocket, gid);
            }

            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

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

    // A socket cannot be opened like a file (ENXIO); a regular file can.
    private static bool IsOpenableFile(string path)
    {
        try
        {
            using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read);
            return true;
        }
        catch (UnauthorizedAccessException)
        {
            return true;
        }
        catch (IOException)
        {
            return false;
        }
    }

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
