using Microsoft.AspNetCore.Http.Features;

namespace Falk.Api.Hosting;

/// <summary>
/// Refuses a request whose target has <c>.</c> or <c>..</c> path segments (also percent-encoded). The server removes
/// dot segments before routing, so <c>DELETE /v1/machines/ID/snapshots/..</c> would otherwise reach
/// <c>DELETE /v1/machines/ID</c> and destroy the machine. No name Falk hands out is <c>.</c> or <c>..</c>, so such a
/// target is always a mistake or an attack: 400, and nothing runs.
/// </summary>
internal static class LiteralPaths
{
    public static IApplicationBuilder UseLiteralPaths(this IApplicationBuilder app) => app.Use(async (context, next) =>
    {
        var raw = context.Features.Get<IHttpRequestFeature>()?.RawTarget ?? string.Empty;
        if (HasDotSegment(raw))
        {
            throw new BadHttpRequestException("the request path has '.' or '..' segments; name the resource literally", StatusCodes.Status400BadRequest);
        }

        await next(context).ConfigureAwait(false);
    });

    internal static bool HasDotSegment(string rawTarget)
    {
        var query = rawTarget.IndexOfAny(['?', '#']);
        var path = query < 0 ? rawTarget : rawTarget[..query];
        foreach (var segment in path.Split('/'))
        {
            var decoded = segment.Replace("%2e", ".", StringComparison.OrdinalIgnoreCase);
            if (decoded is "." or "..")
            {
                return true;
            }
        }

        return false;
    }
}
