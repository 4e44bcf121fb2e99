using System.Net.Sockets;
using System.Text;
using Falk.Client;

namespace Falk.Cli;

/// <summary>
/// <c>falk shell</c>: connects to falkd's socket as the calling user, logs in to the control protocol in text mode
/// (as the original <c>falk.shell</c> did), then copies stdin to the socket and the socket to stdout until either
/// side closes. As the forced command of Kevin's SSH key it lets Kevin reach this host's machines over ssh.
/// </summary>
internal static class ControlShell
{
    private const int ChunkBytes = 16 * 1024;

    public static async Task<int> RunAsync(string socketPath, string? login, CancellationToken cancellationToken)
    {
        var path = FalkHttp.SocketPath(socketPath);
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), cancellationToken);
        }
        catch (SocketException e)
        {
            Output.Error($"cannot connect to falkd on {path}: {e.Message}");
            return ExitCodes.DaemonUnreachable;
        }

        // Where the ssh session comes from, as the original told the daemon: the first word of $SSH_CLIENT.
        var source = Environment.GetEnvironmentVariable("SSH_CLIENT")?.Split(' ', StringSplitOptions.RemoveEmptyEntries).FirstOrDefault() ?? "local";
        var name = login ?? Environment.UserName;
        await using var network = new NetworkStream(socket, ownsSocket: false);
        await network.WriteAsync(Encoding.UTF8.GetBytes($"login name={Quote(name)} source={Quote(source)}\n"), cancellationToken);

        await using var stdin = Console.OpenStandardInput();
        await using var stdout = Console.OpenStandardOutput();
        var up = CopyAsync(stdin, network, cancellationToken);
        var down = CopyAsync(network, stdout, cancellationToken);
        if (await Task.WhenAny(up, down) == up)
        {
            // The client is done: the daemon sees EOF, destroys the connection's machines and closes.
            socket.Shutdown(SocketShutdown.Send);
            await down;
        }

        return ExitCodes.Ok;
    }

    private static async Task CopyAsync(Stream from, Stream to, CancellationToken cancellationToken)
    {
        var buffer = new byte[ChunkBytes];
        try
        {
            int read;
            while ((read = await from.ReadAsync(buffer, cancellationToken)) > 0)
            {
                await to.WriteAsync(buffer.AsMemory(0, read), cancellationToken);
                await to.FlushAsync(cancellationToken);
            }
        }
        catch (IOException)
        {
            // A side went away: that ends the bridge as an EOF would.
        }
    }

    /// <summary>One shell word, as the protocol's text mode reads it (POSIX quoting).</summary>
    private static string Quote(string value) =>
        value.Length > 0 && value.All(c => char.IsAsciiLetterOrDigit(c) || "@%+=:,./-_".Contains(c, StringComparison.Ordinal))
            ? value
            : "'" + value.Replace("'", "'\"'\"'", StringComparison.Ordinal) + "'";
}
