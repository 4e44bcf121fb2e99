using System.Globalization;
using System.Net.ServerSentEvents;
using System.Runtime.CompilerServices;
using Falk.Api.Contracts;
using Falk.Api.Hosting;
using Falk.Core.Machines;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;

namespace Falk.Api.Endpoints;

public static class EventEndpoints
{
    public static RouteGroupBuilder MapEventEndpoints(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/v1/events").WithTags("Events");
        group.MapGet("/", StreamEvents)
            .WithName("StreamEvents")
            .WithSummary("Server-sent events of machine state changes; reconnect with Last-Event-ID to get what was missed")
            .Produces<MachineEventResponse>(StatusCodes.Status200OK, "text/event-stream")
            .ProducesProblem(StatusCodes.Status400BadRequest)
            .ProducesProblem(StatusCodes.Status403Forbidden)
            .ProducesProblem(StatusCodes.Status429TooManyRequests);
        return group;
    }

    /// <param name="lastEventId">The id of the last event the client saw (the SSE reconnection header).</param>
    internal static ServerSentEventsResult<MachineEventResponse> StreamEvents(
        [FromHeader(Name = "Last-Event-ID")] string? lastEventId, HttpContext http, MachineService machines, IHostApplicationLifetime lifetime)
    {
        long? after = null;
        if (!string.IsNullOrEmpty(lastEventId))
        {
            after = long.TryParse(lastEventId, NumberStyles.None, CultureInfo.InvariantCulture, out var id)
                ? id
                : throw new InvalidRequestException("Last-Event-ID", $"Last-Event-ID must be an event id, not '{lastEventId}'");
        }

        // Counted against the caller's max_event_streams_per_uid until the answer is done (429 when over it).
        var caller = http.Caller();
        http.Response.RegisterForDispose(machines.HoldEventStream(caller));

        // The stream ends when the client goes or the daemon stops, so an open stream never holds up a shutdown.
        var ends = CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted, lifetime.ApplicationStopping);
        http.Response.RegisterForDispose(ends);
        return TypedResults.ServerSentEvents(Items(http.Response, machines.SubscribeAsync(caller, after, ends.Token)));
    }

    private static async IAsyncEnumerable<SseItem<MachineEventResponse>> Items(
        HttpResponse response, IAsyncEnumerable<MachineEvent> events, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        // The result has set the headers before it asks for the first item: send them now, so a client
        // knows it is subscribed even while nothing happens.
        await response.Body.FlushAsync(cancellationToken);
        await foreach (var e in events.WithCancellation(cancellationToken))
        {
            yield return new SseItem<MachineEventResponse>(MachineEventResponse.From(e), e.Type)
            {
                EventId = e.Id.ToString(CultureInfo.InvariantCulture),
            };
        }
    }
}
