using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Falk.Api.Hosting;
using Falk.Core;
using Falk.Core.Machines;
using Falk.Core.Processes;
using Falk.Core.Ssh;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Mvc;

namespace Falk.Api.Errors;

/// <summary>
/// Turns exceptions into RFC 9457 problem details: Falk's own by their kind, bad requests by their status,
/// anything else as a 500 without internals.
/// </summary>
internal sealed partial class FalkExceptionHandler(IProblemDetailsService problems, ILogger<FalkExceptionHandler> logger) : IExceptionHandler
{
    public const string TypePrefix = "urn:falk:problem:";

    [GeneratedRegex(@"System\.Nullable`1\[System\.(\w+)\]|System\.(?:Collections\.Generic\.)?(\w+)")]
    private static partial Regex DotNetTypeName();

    public async ValueTask<bool> TryHandleAsync(HttpContext context, Exception exception, CancellationToken cancellationToken)
    {
        var problem = exception switch
        {
            FalkException falk => FromFalk(falk, context),
            BadHttpRequestException bad => FromBadRequest(bad),
            _ when Falk.Core.State.DiskFull.Is(exception) => FromFalk(new StorageFullException("the disk of state_dir is full: what was asked could not be recorded, so it was not done", exception), context),
            _ => null,
        };

        if (exception is StorageFullException || Falk.Core.State.DiskFull.Is(exception))
        {
            ApiLog.StorageFull(logger, context.Request.Method, context.Request.Path, (exception.InnerException ?? exception).Message);
        }

        if (problem is null)
        {
            ApiLog.Unhandled(logger, context.Request.Method, context.Request.Path, exception);
            problem = new ProblemDetails
            {
                Status = StatusCodes.Status500InternalServerError,
                Title = "Internal error",
                Detail = "the daemon failed unexpectedly; its log has the details",
                Type = TypePrefix + "internal",
            };
        }

        problem.Instance ??= context.Request.Path;
        context.Response.StatusCode = problem.Status!.Value;
        return await problems.TryWriteAsync(new ProblemDetailsContext
        {
            HttpContext = context,
            ProblemDetails = problem,
            Exception = exception,
        });
    }

    /// <summary>
    /// Gives the framework's own error answers (no route, body too large before any handler ran, wrong media type)
    /// Falk's problem types, so that every error a client sees has the same shape.
    /// </summary>
    public static void DescribeFrameworkProblem(ProblemDetailsContext context)
    {
        var problem = context.ProblemDetails;
        if (problem.Type?.StartsWith(TypePrefix, StringComparison.Ordinal) == true)
        {
            return;
        }

        (problem.Type, problem.Title, problem.Detail) = problem.Status switch
        {
            StatusCodes.Status404NotFound => (TypePrefix + "not-found", "Not found", problem.Detail ?? $"no such resource: {context.HttpContext.Request.Path}"),
            StatusCodes.Status405MethodNotAllowed => (TypePrefix + "method-not-allowed", "Method not allowed", problem.Detail ?? $"{context.HttpContext.Request.Method} is not allowed on {context.HttpContext.Request.Path}"),
            StatusCodes.Status413PayloadTooLarge => (TypePrefix + "body-too-large", "Request body too large", problem.Detail ?? $"request bodies are limited to {FalkApiServiceCollectionExtensions.MaxRequestBodyBytes} bytes"),
            StatusCodes.Status415UnsupportedMediaType => (TypePrefix + "unsupported-media-type", "Unsupported media type", problem.Detail ?? "send the body as application/json"),
            _ => (TypePrefix + "bad-request", problem.Title ?? "Bad request", problem.Detail),
        };
    }

    public static int StatusOf(FalkException exception) => exception switch
    {
        InvalidRequestException => StatusCodes.Status400BadRequest,
        AccessDeniedException => StatusCodes.Status403Forbidden,
        TemplateNotFoundException or MachineNotFoundException or SnapshotNotFoundException => StatusCodes.Status404NotFound,
        MachineStateConflictException or ManagementConflictException or SnapshotExistsException or SnapshotLimitException or NotSupportedByBackendException => StatusCodes.Status409Conflict,
        PeerLimitException => StatusCodes.Status429TooManyRequests,
        StorageFullException => StatusCodes.Status507InsufficientStorage,
        CapacityExhaustedException or BackendUnavailableException => StatusCodes.Status503ServiceUnavailable,
        HostKeyMismatchException or SshEndpointTakenException or MachineFailedException or BackendOperationException or ProcessFailedException => StatusCodes.Status502BadGateway,
        WaitTimeoutException => StatusCodes.Status504GatewayTimeout,
        _ => StatusCodes.Status500InternalServerError,
    };

    private static ProblemDetails FromFalk(FalkException exception, HttpContext context)
    {
        var problem = new ProblemDetails
        {
            Status = StatusOf(exception),
            Title = exception.Title,
            Detail = exception.Message,
            Type = TypePrefix + exception.Code,
        };

        foreach (var (key, value) in exception.Details)
        {
            if (value is not null)
            {
                problem.Extensions[key] = value;
            }
        }

        var retryAfter = exception switch
        {
            CapacityExhaustedException c => c.RetryAfter,
            BackendUnavailableException b => b.RetryAfter,
            _ => (TimeSpan?)null,
        };
        if (retryAfter is { } delay)
        {
            context.Response.Headers.RetryAfter = ((int)Math.Ceiling(delay.TotalSeconds)).ToString(CultureInfo.InvariantCulture);
        }

        return problem;
    }

    private static ProblemDetails FromBadRequest(BadHttpRequestException exception)
    {
        var detail = exception.InnerException is JsonException json
            ? $"invalid JSON at {json.Path ?? "$"}: {DotNetTypeName().Replace(json.Message.Split(" Path:")[0], m => m.Groups[1].Success ? m.Groups[1].Value : m.Groups[2].Value)}"
            : exception.Message;
        var status = exception.StatusCode;
        return new ProblemDetails
        {
            Status = status,
            Title = status == StatusCodes.Status413PayloadTooLarge ? "Request body too large" : "Bad request",
            Detail = detail,
            Type = TypePrefix + (status == StatusCodes.Status413PayloadTooLarge ? "body-too-large" : "bad-request"),
        };
    }
}
