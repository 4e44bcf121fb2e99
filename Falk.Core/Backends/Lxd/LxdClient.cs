using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text.Json;
using System.Text.Json.Nodes;
using Falk.Core.Machines;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Backends.Lxd;

/// <summary>
/// A typed client of the few endpoints of LXD's (or Incus's) REST API that Falk uses, on <see cref="HttpClient"/> over
/// the daemon's Unix socket. Background operations (create, start, stop, delete, snapshot, publish) are waited on
/// through <c>/1.0/operations/{id}/wait</c>. An unreachable daemon becomes <see cref="BackendUnavailableException"/>
/// naming the socket (503); a refusal becomes <see cref="LxdApiException"/> with the daemon's own words.
/// </summary>
public sealed class LxdClient : IDisposable
{
    private static readonly TimeSpan RetryAfter = TimeSpan.FromSeconds(5);

    private readonly HttpClient _http;
    private readonly ILogger _logger;

    public LxdClient(LxdFlavor flavor, string socketPath, ILogger logger)
    {
        Flavor = flavor;
        SocketPath = socketPath;
        _logger = logger;
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (_, ct) =>
            {
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), ct).ConfigureAwait(false);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
            PooledConnectionIdleTimeout = TimeSpan.FromSeconds(30),
        };
        _http = new HttpClient(handler) { BaseAddress = new Uri("http://lxd"), Timeout = Timeout.InfiniteTimeSpan };
    }

    public LxdFlavor Flavor { get; }

    public string SocketPath { get; }

    // --- instances ---------------------------------------------------------------------------------------------------

    public Task<LxdInstance?> InstanceAsync(string name, CancellationToken cancellationToken) =>
        OrNullAsync(async () => (await SyncAsync(HttpMethod.Get, $"/1.0/instances/{name}", null, $"inspect instance {name}", cancellationToken).ConfigureAwait(false))
            .Deserialize<LxdInstance>(LxdJson.Options)!);

    /// <summary>Every instance with its config (the API of LXD 5.0 filters nothing server-side by config; callers do).</summary>
    public async Task<IReadOnlyList<LxdInstance>> InstancesAsync(CancellationToken cancellationToken) =>
        (await SyncAsync(HttpMethod.Get, "/1.0/instances?recursion=1", null, "list instances", cancellationToken).ConfigureAwait(false))
            .Deserialize<List<LxdInstance>>(LxdJson.Options) ?? [];

    public Task CreateInstanceAsync(JsonObject request, CancellationToken cancellationToken) =>
        RunAsync(HttpMethod.Post, "/1.0/instances", request, $"create instance {request["name"]}", cancellationToken);

    /// <summary><paramref name="action"/>: start, stop, restart, freeze, unfreeze. A stop with <paramref name="force"/> kills at once.</summary>
    public Task ChangeStateAsync(string name, string action, bool force, TimeSpan? timeout, CancellationToken cancellationToken) =>
        RunAsync(HttpMethod.Put, $"/1.0/instances/{name}/state", new JsonObject
        {
            ["action"] = action,
            ["force"] = force,
            ["timeout"] = timeout is { } t ? (int)Math.Ceiling(t.TotalSeconds) : -1,
        }, $"{action} instance {name}", cancellationToken);

    public Task DeleteInstanceAsync(string name, CancellationToken cancellationToken) =>
        RunAsync(HttpMethod.Delete, $"/1.0/instances/{name}", null, $"delete instance {name}", cancellationToken);

    /// <summary>A file of the instance (running or not), or null when it has none at <paramref name="path"/>.</summary>
    public async Task<byte[]?> ReadFileAsync(string name, string path, CancellationToken cancellationToken)
    {
        using var response = await SendAsync(HttpMethod.Get, $"/1.0/instances/{name}/files?path={Uri.EscapeDataString(path)}", null, $"read {path} of {name}", cancellationToken).ConfigureAwait(false);
        if (response.StatusCode == HttpStatusCode.NotFound)
        {
            return null;
        }

        if (!response.IsSuccessStatusCode)
        {
            await ThrowAsync(response, $"read {path} of {name}", cancellationToken).ConfigureAwait(false);
        }

        return await response.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// What the instance wrote to its console since the last read: LXD 5.0 hands a running container's console buffer
    /// out once (and answers 500 "open : no such file" when nothing is new); a stopped one's last part stays readable.
    /// </summary>
    public async Task<byte[]> ConsoleLogAsync(string name, CancellationToken cancellationToken)
    {
        using var response = await SendAsync(HttpMethod.Get, $"/1.0/instances/{name}/console", null, $"read the console of {name}", cancellationToken).ConfigureAwait(false);
        if (!response.IsSuccessStatusCode)
        {
            try
            {
                await ThrowAsync(response, $"read the console of {name}", cancellationToken).ConfigureAwait(false);
            }
            catch (LxdApiException e) when (e.DaemonMessage.Contains("no such file", StringComparison.Ordinal))
            {
                return [];
            }
        }

        return await response.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The instance's addresses (IPv4 first) on interfaces other than loopback.</summary>
    public async Task<IReadOnlyList<string>> AddressesAsync(string name, CancellationToken cancellationToken)
    {
        var state = await SyncAsync(HttpMethod.Get, $"/1.0/instances/{name}/state", null, $"read the state of {name}", cancellationToken).ConfigureAwait(false);
        var result = new List<(int Order, string Address)>();
        if (state.TryGetProperty("network", out var network) && network.ValueKind == JsonValueKind.Object)
        {
            foreach (var nic in network.EnumerateObject().Where(n => n.Name != "lo"))
            {
                if (!nic.Value.TryGetProperty("addresses", out var addresses) || addresses.ValueKind != JsonValueKind.Array)
                {
                    continue;
                }

                foreach (var address in addresses.EnumerateArray())
                {
                    var family = address.GetProperty("family").GetString();
                    var scope = address.GetProperty("scope").GetString();
                    if (scope == "global" && address.GetProperty("address").GetString() is { } text)
                    {
                        result.Add((family == "inet" ? 0 : 1, text));
                    }
                }
            }
        }

        return result.OrderBy(a => a.Order).Select(a => a.Address).ToList();
    }

    // --- snapshots ---------------------------------------------------------------------------------------------------

    public Task CreateSnapshotAsync(string name, string snapshot, bool stateful, CancellationToken cancellationToken) =>
        RunAsync(HttpMethod.Post, $"/1.0/instances/{name}/snapshots", new JsonObject { ["name"] = snapshot, ["stateful"] = stateful },
            $"snapshot {name} as {snapshot}", cancellationToken);

    public async Task<IReadOnlyList<LxdSnapshot>> SnapshotsAsync(string name, CancellationToken cancellationToken) =>
        (await SyncAsync(HttpMethod.Get, $"/1.0/instances/{name}/snapshots?recursion=1", null, $"list snapshots of {name}", cancellationToken).ConfigureAwait(false))
            .Deserialize<List<LxdSnapshot>>(LxdJson.Options) ?? [];

    public Task RestoreSnapshotAsync(string name, string snapshot, CancellationToken cancellationToken) =>
        RunAsync(HttpMethod.Put, $"/1.0/instances/{name}", new JsonObject { ["restore"] = snapshot }, $"restore {name} to {snapshot}", cancellationToken);

    public Task DeleteSnapshotAsync(string name, string snapshot, CancellationToken cancellationToken) =>
        RunAsync(HttpMethod.Delete, $"/1.0/instances/{name}/snapshots/{Uri.EscapeDataString(snapshot)}", null, $"delete snapshot {snapshot} of {name}", cancellationToken);

    // --- images ------------------------------------------------------------------------------------------------------

    /// <summary>The fingerprint an alias points at, or null when there is no such alias.</summary>
    public Task<string?> AliasTargetAsync(string alias, CancellationToken cancellationToken) =>
        OrNullAsync(async () => (await SyncAsync(HttpMethod.Get, $"/1.0/images/aliases/{Uri.EscapeDataString(alias)}", null, $"look up image alias {alias}", cancellationToken).ConfigureAwait(false))
            .GetProperty("target").GetString());

    public Task<LxdImage?> ImageAsync(string fingerprint, CancellationToken cancellationToken) =>
        OrNullAsync(async () => (await SyncAsync(HttpMethod.Get, $"/1.0/images/{Uri.EscapeDataString(fingerprint)}", null, $"inspect image {fingerprint}", cancellationToken).ConfigureAwait(false))
            .Deserialize<LxdImage>(LxdJson.Options));

    public async Task<IReadOnlyList<LxdImage>> ImagesAsync(CancellationToken cancellationToken) =>
        (await SyncAsync(HttpMethod.Get, "/1.0/images?recursion=1", null, "list images", cancellationToken).ConfigureAwait(false))
            .Deserialize<List<LxdImage>>(LxdJson.Options) ?? [];

    /// <summary>Publishes the (stopped) instance as a new image with <paramref name="properties"/>; returns its fingerprint.</summary>
    public async Task<string> PublishAsync(string name, IReadOnlyDictionary<string, string> properties, CancellationToken cancellationToken)
    {
        var props = new JsonObject();
        foreach (var (key, value) in properties)
        {
            props[key] = value;
        }

        var operation = await RunAsync(HttpMethod.Post, "/1.0/images", new JsonObject
        {
            ["source"] = new JsonObject { ["type"] = "instance", ["name"] = name },
            ["properties"] = props,
        }, $"publish instance {name}", cancellationToken).ConfigureAwait(false);
        return operation.TryGetProperty("metadata", out var metadata) && metadata.ValueKind == JsonValueKind.Object
            && metadata.TryGetProperty("fingerprint", out var fingerprint) && fingerprint.GetString() is { Length: > 0 } made
            ? made
            : throw new LxdApiException($"publish instance {name}", HttpStatusCode.OK, "the operation named no image fingerprint");
    }

    /// <summary>Points <paramref name="alias"/> at <paramref name="fingerprint"/>: one update of an existing alias (atomic), or its creation.</summary>
    public async Task SetAliasAsync(string alias, string fingerprint, string description, CancellationToken cancellationToken)
    {
        var body = new JsonObject { ["target"] = fingerprint, ["description"] = description };
        using var response = await SendAsync(HttpMethod.Put, $"/1.0/images/aliases/{Uri.EscapeDataString(alias)}", body, $"move image alias {alias}", cancellationToken).ConfigureAwait(false);
        if (response.StatusCode == HttpStatusCode.NotFound)
        {
            body["name"] = alias;
            await SyncAsync(HttpMethod.Post, "/1.0/images/aliases", body, $"create image alias {alias}", cancellationToken).ConfigureAwait(false);
            return;
        }

        if (!response.IsSuccessStatusCode)
        {
            await ThrowAsync(response, $"move image alias {alias}", cancellationToken).ConfigureAwait(false);
        }
    }

    public Task DeleteImageAsync(string fingerprint, CancellationToken cancellationToken) =>
        RunAsync(HttpMethod.Delete, $"/1.0/images/{Uri.EscapeDataString(fingerprint)}", null, $"delete image {fingerprint}", cancellationToken);

    public void Dispose() => _http.Dispose();

    // --- transport ---------------------------------------------------------------------------------------------------

    /// <summary>A synchronous call: the answer's <c>metadata</c>.</summary>
    private async Task<JsonElement> SyncAsync(HttpMethod method, string path, JsonObject? body, string what, CancellationToken cancellationToken)
    {
        using var response = await SendAsync(method, path, body, what, cancellationToken).ConfigureAwait(false);
        if (!response.IsSuccessStatusCode)
        {
            await ThrowAsync(response, what, cancellationToken).ConfigureAwait(false);
        }

        using var json = await ReadJsonAsync(response, what, cancellationToken).ConfigureAwait(false);
        return json.RootElement.TryGetProperty("metadata", out var metadata) ? metadata.Clone() : default;
    }

    /// <summary>
    /// A call that starts a background operation: waits for it through <c>/1.0/operations/{id}/wait</c> and returns the
    /// finished operation; a failed one throws with its error.
    /// </summary>
    private async Task<JsonElement> RunAsync(HttpMethod method, string path, JsonObject? body, string what, CancellationToken cancellationToken)
    {
        string operation;
        using (var response = await SendAsync(method, path, body, what, cancellationToken).ConfigureAwait(false))
        {
            if (!response.IsSuccessStatusCode)
            {
                await ThrowAsync(response, what, cancellationToken).ConfigureAwait(false);
            }

            using var json = await ReadJsonAsync(response, what, cancellationToken).ConfigureAwait(false);
            if (json.RootElement.GetProperty("type").GetString() != "async")
            {
                return json.RootElement.TryGetProperty("metadata", out var metadata) ? metadata.Clone() : default;
            }

            operation = json.RootElement.GetProperty("operation").GetString()
                ?? throw new LxdApiException(what, response.StatusCode, "an asynchronous answer without an operation");
        }

        JsonElement finished;
        try
        {
            finished = await SyncAsync(HttpMethod.Get, operation + "/wait?timeout=-1", null, what, cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // The operation goes on inside LXD whether Falk waits or not: let it end before giving up, so that what
            // comes next (a delete that overtook a snapshot) does not race it.
            await WaitOutAsync(operation, what).ConfigureAwait(false);
            throw;
        }

        var status = finished.TryGetProperty("status_code", out var code) ? code.GetInt32() : 0;
        if (status != 200)
        {
            var error = finished.TryGetProperty("err", out var err) ? err.GetString() : null;
            throw new LxdApiException(what, HttpStatusCode.InternalServerError,
                string.IsNullOrEmpty(error) ? $"operation ended with status {finished.GetProperty("status").GetString()}" : error);
        }

        return finished;
    }

    /// <summary>How long an operation whose caller gave up is still waited for.</summary>
    private static readonly TimeSpan AbandonedOperationWait = TimeSpan.FromMinutes(5);

    private async Task WaitOutAsync(string operation, string what)
    {
        using var bounded = new CancellationTokenSource(AbandonedOperationWait);
        try
        {
            await SyncAsync(HttpMethod.Get, operation + "/wait?timeout=-1", null, what, bounded.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is OperationCanceledException or LxdApiException or BackendUnavailableException)
        {
            // It ended badly, or not in time, or the daemon went away: nothing more to wait for.
        }
    }

    private async Task<HttpResponseMessage> SendAsync(HttpMethod method, string path, JsonObject? body, string what, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(method, path);
        if (body is not null)
        {
            request.Content = JsonContent.Create(body);
        }

        try
        {
            return await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
        }
        catch (HttpRequestException e) when (!cancellationToken.IsCancellationRequested)
        {
            LxdLog.DaemonUnreachable(_logger, Flavor.Product, SocketPath, what, e.Message);
            throw new BackendUnavailableException(
                $"the {Flavor.Product} API at {SocketPath} cannot be reached ({what}: {Innermost(e).Message}); is `{Flavor.DaemonCommand}` running?",
                RetryAfter, e);
        }
    }

    private static async Task<JsonDocument> ReadJsonAsync(HttpResponseMessage response, string what, CancellationToken cancellationToken)
    {
        try
        {
            var stream = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
            await using (stream.ConfigureAwait(false))
            {
                return await JsonDocument.ParseAsync(stream, cancellationToken: cancellationToken).ConfigureAwait(false);
            }
        }
        catch (JsonException e)
        {
            throw new LxdApiException(what, response.StatusCode, $"an answer that is not JSON: {e.Message}");
        }
    }

    private static async Task ThrowAsync(HttpResponseMessage response, string what, CancellationToken cancellationToken)
    {
        var text = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
        string message;
        try
        {
            using var json = JsonDocument.Parse(text);
            message = json.RootElement.TryGetProperty("error", out var error) && error.GetString() is { Length: > 0 } said ? said : text.Trim();
        }
        catch (JsonException)
        {
            message = text.Trim();
        }

        throw new LxdApiException(what, response.StatusCode, message);
    }

    private static async Task<T?> OrNullAsync<T>(Func<Task<T>> call)
    {
        try
        {
            return await call().ConfigureAwait(false);
        }
        catch (LxdApiException e) when (e.IsNotFound)
        {
            return default;
        }
    }

    private static Exception Innermost(Exception e)
    {
        while (e.InnerException is not null)
        {
            e = e.InnerException;
        }

        return e;
    }
}

internal static class LxdJson
{
    public static readonly JsonSerializerOptions Options = new(JsonSerializerDefaults.Web)
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
    };
}

/// <summary>An instance as <c>GET /1.0/instances/{name}</c> describes it (the fields Falk reads).</summary>
public sealed record LxdInstance(string Name, string Status, string Type, Dictionary<string, string>? Config)
{
    public bool Running => Status is "Running" or "Frozen";

    /// <summary>Stopped (or broken): not a passing state such as Freezing, Starting or Stopping.</summary>
    public bool Ended => Status is "Stopped" or "Error";

    public string? ConfigValue(string key) => Config?.GetValueOrDefault(key);
}

public sealed record LxdSnapshot(string Name, DateTimeOffset CreatedAt, bool Stateful, long? Size);

public sealed record LxdImage(string Fingerprint, DateTimeOffset CreatedAt, long? Size, Dictionary<string, string>? Properties, List<LxdAlias>? Aliases)
{
    public string? Property(string key) => Properties?.GetValueOrDefault(key);
}

public sealed record LxdAlias(string Name);
