using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Falk.Tests.Fixtures;

/// <summary>An HttpClient that talks HTTP/1.1 over a Unix domain socket, as the CI's client and curl --unix-socket do.</summary>
public static class UnixHttp
{
    public static HttpClient CreateClient(string socketPath) =>
        new(new SocketsHttpHandler
        {
            ConnectCallback = async (_, cancellationToken) =>
            {
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cancellationToken);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
        })
        {
            BaseAddress = new Uri("http://falk/"),
            Timeout = TimeSpan.FromMinutes(3),
        };

    public static async Task<JsonNode> JsonAsync(this HttpResponseMessage response, CancellationToken cancellationToken) =>
        JsonNode.Parse(await response.Content.ReadAsStringAsync(cancellationToken))
        ?? throw new JsonException("empty body");

    public static Task<HttpResponseMessage> PostJsonAsync(this HttpClient client, string path, object body, CancellationToken cancellationToken) =>
        client.PostAsJsonAsync(path, body, cancellationToken);

    public static Task<HttpResponseMessage> PostRawAsync(this HttpClient client, string path, string body, CancellationToken cancellationToken) =>
        client.PostAsync(path, new StringContent(body, System.Text.Encoding.UTF8, "application/json"), cancellationToken);
}
