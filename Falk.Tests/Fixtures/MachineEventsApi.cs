using System.Text.Json.Nodes;

namespace Falk.Tests.Fixtures;

/// <summary>One event of the daemon's <c>GET /v1/events</c> stream: its id, its type and its JSON data.</summary>
public sealed record ServerSentEvent(long Id, string Type, JsonNode Data);

/// <summary>Reads the daemon's event stream as a client does, from the start of the window or from a Last-Event-ID.</summary>
public static class MachineEventsApi
{
    /// <summary>Reads server-sent events until <paramref name="expected"/> or the stream goes quiet for <paramref name="quiet"/> (two seconds).</summary>
    public static async Task<List<ServerSentEvent>> ReadEventsAsync(this HttpClient client, long? lastEventId, int expected, CancellationToken ct, TimeSpan? quiet = null)
    {
        var quietFor = quiet ?? TimeSpan.FromSeconds(2);
        using var request = new HttpRequestMessage(HttpMethod.Get, "v1/events");
        if (lastEventId is { } last)
        {
            request.Headers.Add("Last-Event-ID", last.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }

        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct);
        response.Content.Headers.ContentType!.MediaType.Should().Be("text/event-stream");
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(ct));
        var events = new List<ServerSentEvent>();
        string? type = null, data = null, id = null;
        using var quietToken = CancellationTokenSource.CreateLinkedTokenSource(ct);
        quietToken.CancelAfter(quietFor);
        try
        {
            while (events.Count < expected && await reader.ReadLineAsync(quietToken.Token) is { } line)
            {
                if (line.Length == 0)
                {
                    events.Add(new ServerSentEvent(long.Parse(id!, System.Globalization.CultureInfo.InvariantCulture), type!, JsonNode.Parse(data!)!));
                    (type, data, id) = (null, null, null);
                    quietToken.CancelAfter(quietFor);
                }
                else if (line.StartsWith("event: ", StringComparison.Ordinal))
                {
                    type = line[7..];
                }
                else if (line.StartsWith("data: ", StringComparison.Ordinal))
                {
                    data = line[6..];
                }
                else if (line.StartsWith("id: ", StringComparison.Ordinal))
                {
                    id = line[4..];
                }
            }
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            // Quiet for a while: everything there was has been read.
        }

        return events;
    }
}
