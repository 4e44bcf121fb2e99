using System.Net.Sockets;

namespace Falk.Client;

/// <summary>HTTP/1.1 to falkd over its Unix domain socket, as the CI's client and <c>curl --unix-socket</c> speak it.</summary>
public static class FalkHttp
{
    /// <summary>Turns <c>unix:///run/kevin/falk</c> (the original's form) or a plain path into a path.</summary>
    public static string SocketPath(string socket) =>
        socket.StartsWith("unix://", StringComparison.Ordinal) ? socket["unix://".Length..] : socket;

    /// <summary>A client whose every connection goes to <paramref name="socket"/>; requests use paths such as <c>v1/info</c>.</summary>
    public static HttpClient CreateClient(string socket, TimeSpan? timeout = null)
    {
        var path = SocketPath(socket);
        return new HttpClient(new SocketsHttpHandler
        {
            ConnectCallback = async (_, cancellationToken) =>
            {
                var connection = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await connection.ConnectAsync(new UnixDomainSocketEndPoint(path), cancellationToken).ConfigureAwait(false);
                    return new NetworkStream(connection, ownsSocket: true);
                }
                catch
                {
                    connection.Dispose();
                    throw;
                }
            },
        })
        {
            BaseAddress = new Uri("http://falk/"),
            Timeout = timeout ?? Timeout.InfiniteTimeSpan,
        };
    }
}
