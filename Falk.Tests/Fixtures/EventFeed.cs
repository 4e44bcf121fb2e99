using System.Text.Json.Nodes;

namespace Falk.Tests.Fixtures;

/// <summary>One server-sent event of <c>GET /v1/events</c>.</summary>
public sealed record Sse(long Id, string Type, JsonNode Data);

/// <summary>Reads falkd's event stream.</summary>
public static class EventFeed
{
    /// <summary>Reads server-sent events until <paramref name="expected"/> or the stream goes quiet for <paramref name="quiet"/> (two seconds).</summary>
    public static async Task<List<Sse>> ReadEventsAsync(this HttpClient client, long? lastEventId, int expected, CancellationToken ct, TimeSpan? quiet = null)
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
        var events = new List<Sse>();
        string? type = null, data = null, id = null;
        using var quietToken = CancellationTokenSource.CreateLinkedTokenSource(ct);
        quietToken.CancelAfter(quietFor);
        try
        {
            while (events.Count < expected && await reader.ReadLineAsync(quietToken.Token) is { } line)
            {
                if (line.Length == 0)
                {
                    events.Add(new Sse(long.Parse(id!, System.Globalization.CultureInfo.InvariantCulture), type!, JsonNode.Parse(data!)!));
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
