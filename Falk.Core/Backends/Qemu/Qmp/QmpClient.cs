using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;

namespace Falk.Core.Backends.Qemu.Qmp;

/// <summary>
/// A client of the QEMU Machine Protocol over a Unix socket (qemu <c>docs/interop/qmp-spec.rst</c>): reads the greeting,
/// negotiates <c>qmp_capabilities</c>, then sends commands with ids of its own. One reader loop dispatches every line:
/// responses complete the pending request with their id, events go to <see cref="Events"/>. When the connection ends
/// every pending request fails with <see cref="QmpConnectionException"/> and the event channel completes.
/// Lines may end in CRLF or LF; unknown keys are ignored.
/// </summary>
public sealed class QmpClient : IAsyncDisposable
{
    private const int EventBacklog = 256;

    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly StreamReader _reader;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly Lock _pendingLock = new();
    private readonly Dictionary<string, Pending> _pending = new(StringComparer.Ordinal);
    private readonly Channel<QmpEvent> _events = Channel.CreateBounded<QmpEvent>(
        new BoundedChannelOptions(EventBacklog) { FullMode = BoundedChannelFullMode.DropOldest, SingleWriter = true });
    private readonly CancellationTokenSource _disposing = new();
    private readonly TaskCompletionSource _closed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Task? _readLoop;
    private Exception? _closeReason;
    private long _nextId;
    private int _disposed;

    private QmpClient(Socket socket, string socketPath)
    {
        _socket = socket;
        SocketPath = socketPath;
        _stream = new NetworkStream(socket, ownsSocket: false);
        _reader = new StreamReader(_stream, new UTF8Encoding(false), detectEncodingFromByteOrderMarks: false);
    }

    public string SocketPath { get; }

    /// <summary>The server's greeting (<c>{"QMP": {"version": …, "capabilities": […]}}</c>).</summary>
    public JsonObject Greeting { get; private set; } = [];

    /// <summary>Events in the order QEMU sent them. The oldest are dropped if nobody reads more than a few hundred.</summary>
    public ChannelReader<QmpEvent> Events => _events.Reader;

    /// <summary>Completes (never faults) when the connection has ended for any reason.</summary>
    public Task Closed => _closed.Task;

    /// <summary>Connects, reads the greeting and enters command mode. Throws <see cref="QmpConnectionException"/> if the peer does not speak QMP.</summary>
    public static async Task<QmpClient> ConnectAsync(string socketPath, CancellationToken cancellationToken)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        var client = new QmpClient(socket, socketPath);
        try
        {
            await client.HandshakeAsync(cancellationToken).ConfigureAwait(false);
            return client;
        }
        catch
        {
            await client.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// Runs <paramref name="command"/> and returns its <c>return</c> value. A QMP error is a <see cref="QmpErrorException"/>;
    /// a connection that ends first is a <see cref="QmpConnectionException"/>. Cancelling stops the wait, not the command.
    /// With <paramref name="fileDescriptor"/> the command's line carries that descriptor (SCM_RIGHTS), as <c>getfd</c> wants.
    /// </summary>
    public async Task<JsonNode?> ExecuteAsync(string command, JsonObject? arguments, SafeHandle? fileDescriptor, CancellationToken cancellationToken)
    {
        var id = "falk-" + Interlocked.Increment(ref _nextId).ToString(System.Globalization.CultureInfo.InvariantCulture);
        var pending = new Pending(command, new TaskCompletionSource<JsonNode?>(TaskCreationOptions.RunContinuationsAsynchronously));
        lock (_pendingLock)
        {
            if (_closeReason is not null)
            {
                throw Closing(command, _closeReason);
            }

            _pending[id] = pending;
        }

        using var registration = cancellationToken.Register(() =>
        {
            if (Forget(id))
            {
                pending.Completion.TrySetCanceled(cancellationToken);
            }
        });

        var request = new JsonObject { ["execute"] = command, ["id"] = id };
        if (arguments is not null)
        {
            request["arguments"] = arguments;
        }

        await SendAsync(request, fileDescriptor, cancellationToken).ConfigureAwait(false);
        return await pending.Completion.Task.ConfigureAwait(false);
    }

    public Task<JsonNode?> ExecuteAsync(string command, JsonObject? arguments, CancellationToken cancellationToken) =>
        ExecuteAsync(command, arguments, fileDescriptor: null, cancellationToken);

    public Task<JsonNode?> ExecuteAsync(string command, CancellationToken cancellationToken) => ExecuteAsync(command, null, cancellationToken);

    /// <summary>
    /// Runs a human monitor command (<c>savevm</c>, <c>loadvm</c>, <c>info …</c>) and returns its text. HMP reports
    /// most failures as text, not as a QMP error: callers that expect no output should treat any as the error.
    /// </summary>
    public async Task<string> HumanMonitorCommandAsync(string commandLine, CancellationToken cancellationToken)
    {
        var result = await ExecuteAsync("human-monitor-command", new JsonObject { ["command-line"] = commandLine }, cancellationToken).ConfigureAwait(false);
        return result?.GetValue<string>() ?? string.Empty;
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        Close(new QmpConnectionException($"the QMP connection to {SocketPath} was closed by Falk"));
        await _disposing.CancelAsync().ConfigureAwait(false);
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (SocketException)
        {
            // Already disconnected.
        }

        _socket.Dispose();
        if (_readLoop is not null)
        {
            await _readLoop.ConfigureAwait(false);
        }

        _reader.Dispose();
        await _stream.DisposeAsync().ConfigureAwait(false);

        // The write lock and the token source are left to the collector: a late request (an event handler's quit)
        // may still be on its way to them, and neither holds anything that needs releasing.
    }

    private async Task HandshakeAsync(CancellationToken cancellationToken)
    {
        string? line;
        try
        {
            do
            {
                line = await _reader.ReadLineAsync(cancellationToken).ConfigureAwait(false);
            }
            while (line is not null && string.IsNullOrWhiteSpace(line));
        }
        catch (IOException e)
        {
            throw new QmpConnectionException($"the QMP connection to {SocketPath} broke before the greeting: {e.Message}", e);
        }

        if (line is null)
        {
            throw new QmpConnectionException($"{SocketPath} closed without a QMP greeting");
        }

        JsonObject? greeting;
        try
        {
            greeting = JsonNode.Parse(line) as JsonObject;
        }
        catch (JsonException e)
        {
            throw new QmpConnectionException($"{SocketPath} did not greet with QMP: {Shorten(line)}", e);
        }

        if (greeting?["QMP"] is not JsonObject)
        {
            throw new QmpConnectionException($"{SocketPath} did not greet with QMP: {Shorten(line)}");
        }

        Greeting = greeting;
        _readLoop = ReadLoopAsync();
        await ExecuteAsync("qmp_capabilities", cancellationToken).ConfigureAwait(false);
    }

    private async Task SendAsync(JsonObject request, SafeHandle? fileDescriptor, CancellationToken cancellationToken)
    {
        var bytes = Encoding.UTF8.GetBytes(request.ToJsonString() + "\n");
        await _writeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (fileDescriptor is null)
            {
                await _stream.WriteAsync(bytes, cancellationToken).ConfigureAwait(false);
            }
            else
            {
                // Everything written before is out (the lock is held): the descriptor travels with this line's bytes.
                DescriptorPassing.Send(_socket, bytes, fileDescriptor);
            }
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
        {
            Close(new QmpConnectionException($"the QMP connection to {SocketPath} broke: {e.Message}", e));
        }
        finally
        {
            _writeLock.Release();
        }
    }

    private async Task ReadLoopAsync()
    {
        // Run the loop off the caller's stack: the handshake awaits a response this loop delivers.
        await Task.Yield();
        Exception reason;
        try
        {
            while (true)
            {
                var line = await _reader.ReadLineAsync(_disposing.Token).ConfigureAwait(false);
                if (line is null)
                {
                    reason = new QmpConnectionException($"QEMU closed the QMP connection on {SocketPath}");
                    break;
                }

                if (!string.IsNullOrWhiteSpace(line))
                {
                    Dispatch(line);
                }
            }
        }
        catch (JsonException e)
        {
            reason = new QmpConnectionException($"QEMU sent a line on {SocketPath} that is not QMP JSON: {e.Message}", e);
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or OperationCanceledException)
        {
            reason = new QmpConnectionException($"the QMP connection to {SocketPath} ended: {e.Message}", e);
        }

        Close(reason);
    }

    private void Dispatch(string line)
    {
        if (JsonNode.Parse(line) is not JsonObject message)
        {
            throw new JsonException($"expected an object, got: {Shorten(line)}");
        }

        if (message["event"] is JsonValue eventName)
        {
            var timestamp = message["timestamp"] is JsonObject t
                ? DateTimeOffset.FromUnixTimeMilliseconds((t["seconds"]?.GetValue<long>() ?? 0) * 1000 + (t["microseconds"]?.GetValue<long>() ?? 0) / 1000)
                : DateTimeOffset.UtcNow;
            _events.Writer.TryWrite(new QmpEvent(eventName.GetValue<string>(), message["data"] as JsonObject, timestamp));
            return;
        }

        // A response without an id of ours (or to a request already given up) has nobody waiting for it.
        if (message["id"] is not JsonValue idValue || !idValue.TryGetValue<string>(out var id) || !TryTake(id, out var pending))
        {
            return;
        }

        if (message["error"] is JsonObject error)
        {
            pending.Completion.TrySetException(new QmpErrorException(
                pending.Command,
                error["class"]?.GetValue<string>() ?? "GenericError",
                error["desc"]?.GetValue<string>() ?? "(no description)"));
        }
        else
        {
            pending.Completion.TrySetResult(message["return"]?.DeepClone());
        }
    }

    private bool TryTake(string id, out Pending pending)
    {
        lock (_pendingLock)
        {
            return _pending.Remove(id, out pending!);
        }
    }

    private bool Forget(string id)
    {
        lock (_pendingLock)
        {
            return _pending.Remove(id);
        }
    }

    /// <summary>Marks the connection ended: every pending request fails, the event channel completes. The first reason wins.</summary>
    private void Close(Exception reason)
    {
        List<Pending> orphans;
        lock (_pendingLock)
        {
            _closeReason ??= reason;
            orphans = [.. _pending.Values];
            _pending.Clear();
        }

        foreach (var orphan in orphans)
        {
            orphan.Completion.TrySetException(Closing(orphan.Command, _closeReason));
        }

        _events.Writer.TryComplete();
        _closed.TrySetResult();
    }

    private static QmpConnectionException Closing(string command, Exception reason) =>
        new($"QMP command '{command}' got no answer: {reason.Message}", reason);

    private static string Shorten(string line) => line.Length <= 200 ? line : line[..200] + "…";

    private sealed record Pending(string Command, TaskCompletionSource<JsonNode?> Completion);
}
