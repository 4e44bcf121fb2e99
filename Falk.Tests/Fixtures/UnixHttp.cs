using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Falk.Tests.Fixtures;

/// <summary>Helpers for talking JSON to the daemon in tests.</summary>
public static class UnixHttp
{
    public static HttpClient CreateClient(string socketPath) => Falk.Client.FalkHttp.CreateClient(socketPath, TimeSpan.FromMinutes(3));

    public static async Task<JsonNode> JsonAsync(this HttpResponseMessage response, CancellationToken cancellationToken) =>
        JsonNode.Parse(await response.Content.ReadAsStringAsync(cancellationToken))
        ?? throw new JsonException("empty body");

    public static Task<HttpResponseMessage> PostJsonAsync(this HttpClient client, string path, object body, CancellationToken cancellationToken) =>
        client.PostAsJsonAsync(path, body, cancellationToken);

    public static Task<HttpResponseMessage> PostRawAsync(this HttpClient client, string path, string body, CancellationToken cancellationToken) =>
        client.PostAsync(path, new StringContent(body, System.Text.Encoding.UTF8, "application/json"), cancellationToken);
}
