using System.Buffers;
using System.IO.Pipelines;
using Falk.Api.Hosting;
using Falk.Core.Config;
using Falk.Core.Machines;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace Falk.Api.Protocol;

/// <summary>
/// One socket, two protocols: a connection whose first word is an HTTP method goes on to Kestrel's HTTP handling;
/// anything else (a lower-case command, a JSON object) is the original control protocol. The client speaks first
/// in both, so the first bytes decide before anything is parsed.
/// </summary>
internal static class ProtocolRouting
{
    private static readonly string[] HttpMethods = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT"];

    /// <summary>The longest method plus its space: by then the first word is known.</summary>
    private const int DecisionBytes = 8;

    public static ListenOptions UseControlProtocol(this ListenOptions listen)
    {
        listen.Use(next => async connection =>
        {
            // A connection that says nothing, or a protocol session, ends when the daemon stops.
            var services = listen.ApplicationServices;
            using var ends = CancellationTokenSource.CreateLinkedTokenSource(
                connection.ConnectionClosed, services.GetRequiredService<IHostApplicationLifetime>().ApplicationStopping);
            var peer = PeerIdentity.Of(connection.Features);
            var caller = peer is null ? null : services.GetRequiredService<AccessPolicy>().Authorize(peer);
            using var slot = services.GetRequiredService<ConnectionLimits>().TryEnter(caller);
            if (slot is null)
            {
                // Over its uid's max_connections_per_uid: told so in its own protocol (if it speaks within a few
                // seconds), then closed.
                var refusal = services.GetRequiredService<ConnectionLimits>().Refusal(caller!);
                ApiLog.PeerOverLimit(services.GetRequiredService<ILoggerFactory>().CreateLogger<ConnectionLimits>(), peer!.Uid, peer.Pid, refusal.Message);
                await RefuseAsync(connection, refusal, next, ends.Token).ConfigureAwait(false);
                return;
            }

            if (await IsHttpAsync(connection.Transport.Input, ends.Token).ConfigureAwait(false))
            {
                await next(connection).ConfigureAwait(false);
                return;
            }

            var logger = services.GetRequiredService<ILoggerFactory>().CreateLogger<ProtocolSession>();
            if (caller is null)
            {
                ApiLog.PeerRefused(logger, peer?.Uid ?? -1, peer?.Pid ?? -1);
            }

            using var session = new ProtocolSession(connection.ConnectionId, connection.Transport, peer, caller,
                services.GetRequiredService<MachineService>(), services.GetRequiredService<RunIds>(),
                services.GetRequiredService<FalkConfig>().Daemon, logger);
            await session.RunAsync(ends.Token).ConfigureAwait(false);
        });
        return listen;
    }

    private static readonly TimeSpan RefusalWait = TimeSpan.FromSeconds(5);

    private static async Task RefuseAsync(ConnectionContext connection, PeerLimitException refusal, ConnectionDelegate next, CancellationToken cancellationToken)
    {
        using var wait = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        wait.CancelAfter(RefusalWait);
        if (await IsHttpAsync(connection.Transport.Input, wait.Token).ConfigureAwait(false))
        {
            // The HTTP pipeline answers it with the problem (PeerAccess) and closes the connection.
            connection.Features.Set(refusal);
            await next(connection).ConfigureAwait(false);
        }
        else if (!wait.IsCancellationRequested)
        {
            var line = ProtocolMessages.Format(ProtocolAnswer.Error($"PermissionError({ProtocolMessages.Repr(refusal.Message)})"), ProtocolMode.Text);
            await connection.Transport.Output.WriteAsync(System.Text.Encoding.UTF8.GetBytes(line), cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Waits for enough of the first bytes to decide, and leaves them unread for whoever handles the connection.</summary>
    private static async Task<bool> IsHttpAsync(PipeReader input, CancellationToken cancellationToken)
    {
        while (true)
        {
            ReadResult result;
            try
            {
                result = await input.ReadAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return false;
            }

            var decision = Decide(result.Buffer, result.IsCompleted || result.IsCanceled);
            if (decision is { } isHttp)
            {
                input.AdvanceTo(result.Buffer.Start);
                return isHttp;
            }

            input.AdvanceTo(result.Buffer.Start, result.Buffer.End);
        }
    }

    private static bool? Decide(ReadOnlySequence<byte> buffer, bool ended)
    {
        Span<byte> first = stackalloc byte[DecisionBytes];
        var length = (int)Math.Min(buffer.Length, DecisionBytes);
        buffer.Slice(0, length).CopyTo(first);
        first = first[..length];
        for (var i = 0; i < first.Length; i++)
        {
            if (first[i] == (byte)' ')
            {
                var word = System.Text.Encoding.ASCII.GetString(first[..i]);
                return HttpMethods.Contains(word, StringComparer.Ordinal);
            }

            if (first[i] is < (byte)'A' or > (byte)'Z')
            {
                return false;
            }
        }

        return first.Length >= DecisionBytes || ended ? false : null;
    }
}
