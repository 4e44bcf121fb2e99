using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Threading.Channels;
using Falk.Api.Hosting;
using Falk.Core;
using Falk.Core.Config;
using Falk.Core.Machines;
using Falk.Core.Ssh;
using Microsoft.AspNetCore.Connections;

namespace Falk.Api.Protocol;

/// <summary>A request that failed; its message is what the original daemon answered (a Python exception repr).</summary>
internal sealed class ProtocolFailure(string message) : Exception(message);

/// <summary>
/// One connection speaking the original control protocol (version 0), as an adapter on <see cref="MachineService"/>:
/// every machine it makes is an ordinary machine owned by the peer's uid. Requests are answered one at a time in
/// order; a line that does not parse is answered at once. When the connection ends (EOF, <c>Exit</c>, a client
/// <c>Error</c>) the request in flight finishes, the rest is dropped, and every machine of the connection is destroyed.
/// </summary>
internal sealed class ProtocolSession : IDisposable
{
    /// <summary>An unfinished line may not grow beyond this (the original's limit).</summary>
    public const int MaxLineBytes = 8 * 1024 * 1024;

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
    private static readonly TimeSpan TerminateGrace = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan LaunchTimeout = TimeSpan.FromMinutes(5);

    private readonly IDuplexPipe _transport;
    private readonly PeerIdentity? _peer;
    private readonly Caller? _caller;
    private readonly MachineService _machines;
    private readonly RunIds _runIds;
    private readonly DaemonOptions _daemon;
    private readonly ILogger _logger;
    private readonly string _connectionId;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly CancellationTokenSource _closed = new();
    /// <summary>Run ids this connection made (the worker adds and removes, the lease renewer reads).</summary>
    private readonly System.Collections.Concurrent.ConcurrentDictionary<long, bool> _owned = new();
    private ProtocolMode _parseMode = ProtocolMode.Text;
    private string? _login;
    private long? _current;

    public ProtocolSession(string connectionId, IDuplexPipe transport, PeerIdentity? peer, Caller? caller,
        MachineService machines, RunIds runIds, DaemonOptions daemon, ILogger logger)
    {
        _connectionId = connectionId;
        _transport = transport;
        _peer = peer;
        _caller = caller;
        _machines = machines;
        _runIds = runIds;
        _daemon = daemon;
        _logger = logger;
    }

    public async Task RunAsync(CancellationToken connectionClosed)
    {
        ProtocolLog.Opened(_logger, _connectionId, _peer?.Uid ?? -1, _peer?.Pid ?? -1);
        var queue = Channel.CreateUnbounded<(ProtocolRequest Request, ProtocolMode AnswerMode)>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        using var stopReading = connectionClosed.Register(() => _transport.Input.CancelPendingRead());
        var worker = WorkAsync(queue.Reader);
        var leases = RenewLeasesAsync();
        try
        {
            await ReadAsync(queue.Writer).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or ConnectionResetException or ObjectDisposedException or OperationCanceledException)
        {
            // The peer went away mid-read: that ends the connection like an EOF.
        }
        finally
        {
            queue.Writer.TryComplete();
            await _closed.CancelAsync().ConfigureAwait(false);
        }

        try
        {
            await worker.ConfigureAwait(false);
            await leases.ConfigureAwait(false);
        }
        finally
        {
            await TeardownAsync().ConfigureAwait(false);
        }
        ProtocolLog.Closed(_logger, _connectionId);
    }

    /// <summary>Reads lines until EOF, <c>Exit</c>, a client <c>Error</c> or an over-long line.</summary>
    private async Task ReadAsync(ChannelWriter<(ProtocolRequest, ProtocolMode)> queue)
    {
        var input = _transport.Input;
        var pending = new ArrayBufferWriter<byte>();
        while (!_closed.IsCancellationRequested)
        {
            var result = await input.ReadAsync().ConfigureAwait(false);
            if (result.IsCanceled)
            {
                return;
            }

            var lines = SplitLines(result.Buffer, pending);
            input.AdvanceTo(result.Buffer.End);
            foreach (var line in lines)
            {
                if (!await AcceptLineAsync(line, queue).ConfigureAwait(false))
                {
                    return;
                }
            }

            if (pending.WrittenCount > MaxLineBytes)
            {
                await WriteAsync(ProtocolAnswer.Error("too much data."), _parseMode).ConfigureAwait(false);
                return;
            }

            if (result.IsCompleted)
            {
                return;
            }
        }
    }

    /// <summary>The complete lines of <paramref name="buffer"/>; the unfinished rest goes to <paramref name="pending"/>.</summary>
    private static List<byte[]> SplitLines(ReadOnlySequence<byte> buffer, ArrayBufferWriter<byte> pending)
    {
        var lines = new List<byte[]>();
        var reader = new SequenceReader<byte>(buffer);
        while (reader.TryReadTo(out ReadOnlySequence<byte> line, (byte)'\n'))
        {
            if (pending.WrittenCount > 0)
            {
                foreach (var segment in line)
                {
                    pending.Write(segment.Span);
                }

                lines.Add(pending.WrittenSpan.ToArray());
                pending.Clear();
            }
            else
            {
                lines.Add(line.ToArray());
            }
        }

        foreach (var segment in reader.UnreadSequence)
        {
            pending.Write(segment.Span);
        }

        return lines;
    }

    public void Dispose()
    {
        _closed.Dispose();
        _writeLock.Dispose();
    }

    /// <summary>Parses one line and queues it; false when the connection is to end (Exit, client Error).</summary>
    private async Task<bool> AcceptLineAsync(byte[] bytes, ChannelWriter<(ProtocolRequest, ProtocolMode)> queue)
    {
        var mode = _parseMode;
        ProtocolRequest request;
        try
        {
            string text;
            try
            {
                text = StrictUtf8.GetString(bytes);
            }
            catch (DecoderFallbackException)
            {
                throw new ProtocolParseException("UnicodeDecodeError('utf-8', 'invalid start byte')");
            }

            if (string.IsNullOrWhiteSpace(text))
            {
                return true;
            }

            request = ProtocolMessages.Parse(text, mode);
            if (request.Class == "Mode")
            {
                _parseMode = request.Text("mode") switch
                {
                    "text" => ProtocolMode.Text,
                    "json" => ProtocolMode.Json,
                    var other => throw new ProtocolParseException($"ValueError({ProtocolMessages.Repr($"unknown mode {other}")})"),
                };
            }
        }
        catch (ProtocolParseException e)
        {
            // A line that does not parse is answered at once, ahead of queued answers, as the original did.
            ProtocolLog.BadLine(_logger, _connectionId, e.Message);
            await WriteAsync(ProtocolAnswer.Error(e.Message), mode).ConfigureAwait(false);
            return true;
        }

        if (request.Class is "Exit" or "Error")
        {
            ProtocolLog.ClientEnded(_logger, _connectionId, request.Class, request.OptionalText("msg"));
            return false;
        }

        queue.TryWrite((request, mode));
        return true;
    }

    private async Task WorkAsync(ChannelReader<(ProtocolRequest Request, ProtocolMode AnswerMode)> queue)
    {
        await foreach (var (request, answerMode) in queue.ReadAllAsync().ConfigureAwait(false))
        {
            // Once the connection ended, what is still queued is dropped.
            if (_closed.IsCancellationRequested)
            {
                return;
            }

            ProtocolAnswer answer;
            try
            {
                answer = await AnswerAsync(request).ConfigureAwait(false);
            }
            catch (ProtocolFailure e)
            {
                answer = ProtocolAnswer.Error(e.Message);
            }
            catch (FalkException e)
            {
                answer = ProtocolAnswer.Error(PythonError(e));
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // A bug must not end the connection without its teardown: the client gets an Error, the log the rest.
                ProtocolLog.Unexpected(_logger, _connectionId, request.Class, e);
                answer = ProtocolAnswer.Error("RuntimeError('internal error; see the daemon log')");
            }

            if (answer.Class == "Error")
            {
                ProtocolLog.RequestFailed(_logger, _connectionId, request.Class, (string)answer.Fields[0].Value!);
            }

            try
            {
                await WriteAsync(answer, answerMode).ConfigureAwait(false);
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException or OperationCanceledException)
            {
                return;
            }
        }
    }

    private async Task<ProtocolAnswer> AnswerAsync(ProtocolRequest request)
    {
        if (_caller is null)
        {
            throw new ProtocolFailure($"PermissionError('uid {_peer?.Uid} is not an allowed user or in an allowed group')");
        }

        if (request.Class == "Login")
        {
            if (_login is not null)
            {
                throw new ProtocolFailure("tried logging in again");
            }

            _login = request.Text("name");
            ProtocolLog.LoggedIn(_logger, _connectionId, _login, request.OptionalText("source") ?? "-", _caller.Uid);
            return new ProtocolAnswer("Welcome", ("msg", $"hi {_login}!"), ("name", _daemon.Name));
        }

        if (_login is null)
        {
            throw new ProtocolFailure("not logged in");
        }

        return request.Class switch
        {
            "Mode" => ProtocolAnswer.Ok(),
            "Version" => request.Fields["version"] is 0L
                ? ProtocolAnswer.Ok()
                : throw new ProtocolFailure($"failed: unmatching versions: you={request.Fields["version"]} != us=0"),
            "Help" => new ProtocolAnswer("HelpText", ("text", HelpText)),
            "List" => new ProtocolAnswer("MachineList", ("machines", MachineList())),
            "Select" => await SelectAsync(request.Text("name")).ConfigureAwait(false),
            "Prepare" => await PrepareAsync(Handle(request), request.Fields.GetValueOrDefault("manage") is true).ConfigureAwait(false),
            "Launch" => await LaunchAsync(Handle(request)).ConfigureAwait(false),
            "GetConnectionInfo" => ConnectionInfo(Handle(request)),
            "Status" => Status(Handle(request)),
            "ShutdownWait" => await ShutdownWaitAsync(Handle(request), (double)request.Fields["timeout"]!).ConfigureAwait(false),
            "Terminate" => await TerminateAsync(Handle(request)).ConfigureAwait(false),
            "Cleanup" => await CleanupAsync(Handle(request)).ConfigureAwait(false),
            _ => ProtocolAnswer.Ok(),
        };
    }

    private Caller Caller => _caller!;

    /// <summary>The Status answer's class in the daemon's era: justin-era Kevin knows only <c>MachineStatus</c>.</summary>
    private string StatusAnswerClass => _daemon.ProtocolEra == DaemonOptions.JustinEra ? "MachineStatus" : "VMStatus";

    /// <summary>The handle a request means: its run id, else the connection's current machine.</summary>
    private RunHandle Handle(ProtocolRequest request)
    {
        var runId = request.RunId ?? _current ?? throw new ProtocolFailure("IndexError('No machine is currently selected.')");
        return _runIds.Find(runId, Caller.Uid) ?? throw new ProtocolFailure($"KeyError({runId})");
    }

    /// <summary>Section id → [backend class, name], as the original listed its machines.</summary>
    private Dictionary<string, string[]> MachineList() =>
        _machines.Templates.ToDictionary(t => t.Id, t => new[] { BackendClass(t.Type), t.Name }, StringComparer.Ordinal);

    private static string BackendClass(string type) => type switch
    {
        "qemu" => "QEMU",
        "lxd" => "LXD",
        "podman" => "Podman",
        "custom" => "Custom",
        _ => type,
    };

    /// <summary>Select takes the port and prepares the machine; the later <c>Prepare</c> only switches to management mode.</summary>
    private async Task<ProtocolAnswer> SelectAsync(string name)
    {
        var runId = _runIds.Next();
        MachineView machine;
        try
        {
            machine = await CreateAsync(name, manage: false, runId).ConfigureAwait(false);
        }
        catch (TemplateNotFoundException)
        {
            throw new ProtocolFailure($"KeyError({ProtocolMessages.Repr(name)})");
        }

        _runIds.Set(new RunHandle(runId, Caller.Uid, machine.Id, name, Manage: false));
        _owned[runId] = true;
        _current = runId;
        ProtocolLog.Selected(_logger, _connectionId, runId, machine.Id, name);
        return new ProtocolAnswer("RunID", ("run_id", runId));
    }

    private Task<MachineView> CreateAsync(string template, bool manage, long runId) =>
        _machines.CreateAsync(
            new CreateMachineRequest(template, manage, new Dictionary<string, string> { ["protocol.run_id"] = runId.ToString(System.Globalization.CultureInfo.InvariantCulture) }),
            Caller,
            CancellationToken.None);

    private async Task<ProtocolAnswer> PrepareAsync(RunHandle handle, bool manage)
    {
        if (manage == handle.Manage)
        {
            return ProtocolAnswer.Ok();
        }

        // Management mode is chosen at creation here: the machine is made again, in the mode asked for.
        await _machines.DeleteAsync(handle.MachineId, Caller, CancellationToken.None).ConfigureAwait(false);
        try
        {
            var machine = await CreateAsync(handle.Template, manage, handle.RunId).ConfigureAwait(false);
            _runIds.Set(handle with { MachineId = machine.Id, Manage = manage });
            return ProtocolAnswer.Ok();
        }
        catch (FalkException)
        {
            Forget(handle);
            throw;
        }
    }

    private async Task<ProtocolAnswer> LaunchAsync(RunHandle handle)
    {
        try
        {
            await _machines.BootAsync(handle.MachineId, Caller, waitForSsh: false, LaunchTimeout, CancellationToken.None).ConfigureAwait(false);
            return ProtocolAnswer.Ok();
        }
        catch (FalkException e) when (e is not MachineStateConflictException)
        {
            // Kevin sends neither Terminate nor Cleanup after a failed Launch: the machine goes now.
            await DestroyAsync(handle).ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>The machine's SSH address as handed out everywhere: <c>ssh_host</c> was resolved to one address at load.</summary>
    private ProtocolAnswer ConnectionInfo(RunHandle handle)
    {
        var ssh = _machines.GetSsh(handle.MachineId, Caller);
        return new ProtocolAnswer("ConnectionInfo",
            ("ssh_user", ssh.User), ("ssh_host", ssh.Host), ("ssh_port", ssh.Port), ("ssh_known_host_key", ssh.KnownHostKey?.PublicKeyLine));
    }

    private ProtocolAnswer Status(RunHandle handle)
    {
        var state = _machines.Get(handle.MachineId, Caller).State;
        // A guest paused at a monitor is still up: the original protocol only knew whether it had ended.
        var running = state is MachineState.Booting or MachineState.Running or MachineState.Paused or MachineState.Stopping;
        return new ProtocolAnswer(StatusAnswerClass, ("run_id", handle.RunId), ("running", running));
    }

    private async Task<ProtocolAnswer> ShutdownWaitAsync(RunHandle handle, double timeoutSeconds)
    {
        var timeout = TimeSpan.FromSeconds(Math.Clamp(double.IsNaN(timeoutSeconds) ? 0 : timeoutSeconds, 0, Endpoints.MachineEndpoints.MaxTimeoutSeconds));
        try
        {
            await _machines.WaitUntilStoppedAsync(handle.MachineId, Caller, timeout, _closed.Token).ConfigureAwait(false);
            return ProtocolAnswer.Ok();
        }
        catch (Exception e) when (e is WaitTimeoutException or MachineStateConflictException)
        {
            throw new ProtocolFailure("shutdown-wait timed out");
        }
    }

    private async Task<ProtocolAnswer> TerminateAsync(RunHandle handle)
    {
        try
        {
            await _machines.StopAsync(handle.MachineId, Caller, TerminateGrace, CancellationToken.None).ConfigureAwait(false);
        }
        catch (MachineStateConflictException)
        {
            // Never launched, or already ended: there is nothing to terminate, which the original answered with OK.
        }

        return ProtocolAnswer.Ok();
    }

    private async Task<ProtocolAnswer> CleanupAsync(RunHandle handle)
    {
        await _machines.DeleteAsync(handle.MachineId, Caller, CancellationToken.None).ConfigureAwait(false);
        Forget(handle);
        _current = null;
        return ProtocolAnswer.Ok();
    }

    private async Task DestroyAsync(RunHandle handle)
    {
        try
        {
            await _machines.DeleteAsync(handle.MachineId, Caller, CancellationToken.None).ConfigureAwait(false);
            Forget(handle);
        }
        catch (FalkException e)
        {
            // The machine stays listed as failed, with its lease; the run id stays so teardown tries again.
            ProtocolLog.TeardownFailed(_logger, _connectionId, handle.RunId, handle.MachineId, e);
        }
    }

    private void Forget(RunHandle handle)
    {
        _runIds.Remove(handle.RunId);
        _owned.TryRemove(handle.RunId, out _);
        if (_current == handle.RunId)
        {
            _current = null;
        }
    }

    /// <summary>The connection ended: every machine it made and that still exists is destroyed, in parallel.</summary>
    private async Task TeardownAsync()
    {
        if (_caller is null)
        {
            return;
        }

        var handles = _owned.Keys.Select(runId => _runIds.Find(runId, _caller.Uid)).OfType<RunHandle>().ToList();
        if (handles.Count > 0)
        {
            ProtocolLog.TearingDown(_logger, _connectionId, handles.Count);
        }

        await Task.WhenAll(handles.Select(DestroyAsync)).ConfigureAwait(false);
    }

    /// <summary>While the connection lasts, its machines' leases are renewed: the connection is their lease.</summary>
    private async Task RenewLeasesAsync()
    {
        var period = TimeSpan.FromSeconds(Math.Clamp(_daemon.DefaultLeaseSeconds / 3, 1, 300));
        using var timer = new PeriodicTimer(period);
        try
        {
            while (await timer.WaitForNextTickAsync(_closed.Token).ConfigureAwait(false))
            {
                foreach (var runId in _owned.Keys)
                {
                    if (_caller is not null && _runIds.Find(runId, _caller.Uid) is { } handle)
                    {
                        try
                        {
                            _machines.RenewLease(handle.MachineId, _caller, _daemon.DefaultLeaseSeconds);
                        }
                        catch (FalkException)
                        {
                            // Gone meanwhile (deleted over the API): its next request answers KeyError.
                        }
                    }
                }
            }
        }
        catch (OperationCanceledException)
        {
            // The connection ended.
        }
    }

    private async Task WriteAsync(ProtocolAnswer answer, ProtocolMode mode)
    {
        var bytes = Encoding.UTF8.GetBytes(ProtocolMessages.Format(answer, mode));
        await _writeLock.WaitAsync().ConfigureAwait(false);
        try
        {
            await _transport.Output.WriteAsync(bytes).ConfigureAwait(false);
        }
        finally
        {
            _writeLock.Release();
        }
    }

    private static string PythonError(FalkException e) => e switch
    {
        MachineNotFoundException => $"KeyError({ProtocolMessages.Repr(e.Message)})",
        CapacityExhaustedException => $"RuntimeError({ProtocolMessages.Repr(e.Message)})",
        InvalidRequestException or AccessDeniedException => $"ValueError({ProtocolMessages.Repr(e.Message)})",
        _ => $"RuntimeError({ProtocolMessages.Repr(e.Message)})",
    };

    private string HelpText => $$"""

        {{_daemon.ProtocolEra}} shell

        control protocol version 0; one request per line, one answer each, in order.
        text mode: the lower-case class name, positional values, then key=value (shell quoting).
        json mode: one object per line with the fields and "class".

        login name=NAME [source=WHERE]    -> welcome
        mode mode=text|json               -> ok (in the old mode)
        {"version": 0, "class": "Version"}  -> ok (json only)
        help                              -> helptext
        list                              -> machinelist: section id -> [type, name]
        select SECTION                    -> runid (the machine is prepared and becomes current)
        prepare [RUN_ID] [manage=False]   -> ok
        launch [RUN_ID]                   -> ok
        getconnectioninfo [RUN_ID]        -> connectioninfo
        status [RUN_ID]                   -> {{StatusAnswerClass.ToLowerInvariant()}}
        {"run_id": 0, "timeout": 30, "class": "ShutdownWait"} -> ok (json only)
        terminate [RUN_ID]                -> ok
        cleanup [RUN_ID]                  -> ok
        exit                              -> the connection ends; its machines are destroyed
        """;
}
