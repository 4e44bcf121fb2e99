using Falk.Api.Contracts;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Falk.Api.Endpoints;

public static class HealthEndpoints
{
    public static IEndpointRouteBuilder MapHealthEndpoints(this IEndpointRouteBuilder app)
    {
        app.MapGet("/healthz", GetHealth)
            .WithName("GetHealth")
            .WithSummary("Liveness: answers while the daemon serves requests")
            .WithTags("Daemon");
        return app;
    }

    internal static Ok<HealthResponse> GetHealth() => TypedResults.Ok(new HealthResponse("ok"));
}
