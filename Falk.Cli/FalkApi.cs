using System.Net.Http.Json;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Text.Json.Nodes;
using Falk.Client;

namespace Falk.Cli;

/// <summary>The API answered with a problem; <see cref="Exception.Message"/> is the one line a person reads.</summary>
public sealed class FalkApiException(int status, string title, string? detail)
    : Exception(detail is null ? title : $"{title}: {detail}")
{
    public int Status { get; } = status;
}

/// <summary>No daemon answers on the socket.</summary>
public sealed class DaemonUnreachableException(string socket, Exception inner)
    : Exception($"no falkd answers on {socket} ({(File.Exists(socket) ? inner.Message : "no such socket")}); is it running? (--socket or $FALK_SOCKET)", inner);

/// <summary>The REST calls the command makes, each answering JSON or throwing one of the two exceptions above.</summary>
public sealed class FalkApi(string socket) : IDisposable
{
    private readonly HttpClient _http = FalkHttp.CreateClient(socket);

    public string Socket { get; } = FalkHttp.SocketPath(socket);

    public Task<JsonNode> GetAsync(string path, CancellationToken ct) => SendAsync(new HttpRequestMessage(HttpMethod.Get, path), ct);

    public Task<JsonNode> PostAsync(string path, object? body, CancellationToken ct) =>
        SendAsync(new HttpRequestMessage(HttpMethod.Post, path) { Content = body is null ? null : JsonContent.Create(body) }, ct);

    public Task<JsonNode> PutAsync(string path, object body, CancellationToken ct) =>
        SendAsync(new HttpRequestMessage(HttpMethod.Put, path) { Content = JsonContent.Create(body) }, ct);

    public Task<JsonNode> DeleteAsync(string path, CancellationToken ct) => SendAsync(new HttpRequestMessage(HttpMethod.Delete, path), ct);

    /// <summary>Copies a streamed text answer (console) to <paramref name="destination"/>.</summary>
    public async Task CopyTextAsync(string path, Stream destination, CancellationToken ct)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, path);
        using var response = await SendRawAsync(request, ct);
        await using var body = await response.Content.ReadAsStreamAsync(ct);
        var buffer = new byte[8192];
        int read;
        while ((read = await body.ReadAsync(buffer, ct)) > 0)
        {
            await destination.WriteAsync(buffer.AsMemory(0, read), ct);
            await destination.FlushAsync(ct);
        }
    }

    /// <summary>The server-sent events of <c>/v1/events</c>, as their JSON data.</summary>
    public async IAsyncEnumerable<JsonNode> EventsAsync([EnumeratorCancellation] CancellationToken ct)
    {
        using var stream = await OpenEventsAsync(ct);
        await foreach (var e in stream.ReadAllAsync(ct))
        {
            yield return e;
        }
    }

    /// <summary>Subscribes to <c>/v1/events</c> and returns once the daemon has answered: events from then on are not missed.</summary>
    public async Task<EventSubscription> OpenEventsAsync(CancellationToken ct)
    {
        var request = new HttpRequestMessage(HttpMethod.Get, "v1/events");
        var response = await SendRawAsync(request, ct);
        return new EventSubscription(request, response, new StreamReader(await response.Content.ReadAsStreamAsync(ct)));
    }

    public void Dispose() => _http.Dispose();

    private async Task<JsonNode> SendAsync(HttpRequestMessage request, CancellationToken ct)
    {
        using (request)
        {
            using var response = await SendRawAsync(request, ct);
            var text = await response.Content.ReadAsStringAsync(ct);
            return text.Length == 0 ? new JsonObject() : JsonNode.Parse(text) ?? new JsonObject();
        }
    }

    private async Task<HttpResponseMessage> SendRawAsync(HttpRequestMessage request, CancellationToken ct)
    {
        HttpResponseMessage response;
        try
        {
            response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct);
        }
        catch (HttpRequestException e) when (e.InnerException is SocketException or IOException)
        {
            throw new DaemonUnreachableException(Socket, e.InnerException);
        }

        if (response.IsSuccessStatusCode)
        {
            return response;
        }

        using (response)
        {
            var problem = JsonNode.Parse(await response.Content.ReadAsStringAsync(ct));
            throw new FalkApiException((int)response.StatusCode,
                problem?["title"]?.GetValue<string>() ?? response.ReasonPhrase ?? "error",
                problem?["detail"]?.GetValue<string>());
        }
    }
}

/// <summary>An open subscription to the daemon's server-sent events.</summary>
public sealed class EventSubscription(HttpRequestMessage request, HttpResponseMessage response, StreamReader reader) : IDisposable
{
    public async IAsyncEnumerable<JsonNode> ReadAllAsync([EnumeratorCancellation] CancellationToken ct)
    {
        while (await reader.ReadLineAsync(ct) is { } line)
        {
            if (line.StartsWith("data: ", StringComparison.Ordinal) && JsonNode.Parse(line[6..]) is { } data)
            {
                yield return data;
            }
        }
    }

    public void Dispose()
    {
        reader.Dispose();
        response.Dispose();
        request.Dispose();
    }
}
