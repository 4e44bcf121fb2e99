using System.Net.Sockets;
using Docker.DotNet;
using Falk.Core.Machines;
using Microsoft.Extensions.Logging;
using Version = System.Version;

namespace Falk.Core.Backends.Podman.Engine;

/// <summary>
/// The connection to podman's Docker-compatible API. Holds one client while it works and drops it on the first
/// transport failure, so a restarted service is picked up by the next call (no cached broken client). Every call
/// goes through <see cref="CallAsync{T}"/>, which turns an unreachable engine into
/// <see cref="BackendUnavailableException"/> (503, naming the socket) and an engine refusal into
/// <see cref="PodmanApiException"/>.
/// </summary>
public sealed class PodmanEngine : IDisposable
{
    /// <summary>Podman 4.3 serves the Docker API up to 1.41; pinning it keeps the client from asking for more.</summary>
    public static readonly Version ApiVersion = new(1, 41);

    private static readonly TimeSpan RetryAfter = TimeSpan.FromSeconds(5);

    private readonly ILogger _logger;
    private readonly Lock _lock = new();
    private DockerClient? _client;

    public PodmanEngine(Uri socket, ILogger<PodmanEngine> logger)
    {
        Socket = socket;
        _logger = logger;
    }

    /// <summary>The API socket, as <c>unix:///PATH</c>.</summary>
    public Uri Socket { get; }

    /// <summary>
    /// Runs one API call. <paramref name="what"/> names it for errors ("start container m123").
    /// </summary>
    public async Task<T> CallAsync<T>(string what, Func<DockerClient, CancellationToken, Task<T>> call, CancellationToken cancellationToken)
    {
        var client = Client();
        try
        {
            return await call(client, cancellationToken).ConfigureAwait(false);
        }
        catch (DockerApiException e)
        {
            throw new PodmanApiException(what, e.StatusCode, ShortMessage(e.ResponseBody) ?? e.Message, e);
        }
        catch (Exception e) when (IsTransportFailure(e) && !cancellationToken.IsCancellationRequested)
        {
            Drop(client);
            PodmanLog.EngineUnreachable(_logger, Socket.ToString(), what, e.Message);
            throw new BackendUnavailableException(
                $"the podman API at {Socket} cannot be reached ({what}: {Innermost(e).Message}); is `podman system service` running?",
                RetryAfter, e);
        }
    }

    public Task CallAsync(string what, Func<DockerClient, CancellationToken, Task> call, CancellationToken cancellationToken) =>
        CallAsync<bool>(what, async (client, ct) =>
        {
            await call(client, ct).ConfigureAwait(false);
            return true;
        }, cancellationToken);

    public void Dispose()
    {
        lock (_lock)
        {
            _client?.Dispose();
            _client = null;
        }
    }

    private DockerClient Client()
    {
        lock (_lock)
        {
            return _client ??= new DockerClientBuilder()
                .WithEndpoint(Socket)
                .WithApiVersion(ApiVersion)
                .Build();
        }
    }

    /// <summary>Forgets a client whose connection failed; calls already running on it finish on their own.</summary>
    private void Drop(DockerClient client)
    {
        lock (_lock)
        {
            if (ReferenceEquals(_client, client))
            {
                _client = null;
            }
        }
    }

    private static bool IsTransportFailure(Exception e) =>
        e is HttpRequestException or SocketException or IOException
        || (e is OperationCanceledException && e.InnerException is TimeoutException);

    private static Exception Innermost(Exception e)
    {
        while (e.InnerException is not null)
        {
            e = e.InnerException;
        }

        return e;
    }

    /// <summary>The engine's own sentence out of its JSON error body (<c>{"cause":…,"message":…}</c>).</summary>
    private static string? ShortMessage(string? body)
    {
        if (string.IsNullOrWhiteSpace(body))
        {
            return null;
        }

        try
        {
            using var json = System.Text.Json.JsonDocument.Parse(body);
            return json.RootElement.TryGetProperty("message", out var message) ? message.GetString() : body.Trim();
        }
        catch (System.Text.Json.JsonException)
        {
            return body.Trim();
        }
    }
}

/// <summary>The engine answered, and said no.</summary>
public sealed class PodmanApiException(string operation, System.Net.HttpStatusCode status, string message, Exception inner)
    : Exception($"{operation}: {message}", inner)
{
    public System.Net.HttpStatusCode Status { get; } = status;

    /// <summary>The engine's own words, without the operation.</summary>
    public string EngineMessage { get; } = message;

    public bool IsNotFound => Status == System.Net.HttpStatusCode.NotFound;

    public bool IsConflict => Status == System.Net.HttpStatusCode.Conflict;

    /// <summary>Podman answers a kill of a container that is not running with 500 "container state improper" (Docker: 409).</summary>
    public bool IsNotRunning => EngineMessage.Contains("state improper", StringComparison.Ordinal)
        || EngineMessage.Contains("is not running", StringComparison.Ordinal);
}
