using System.Net.Sockets;
using Renci.SshNet;
using Renci.SshNet.Common;

namespace Falk.Core.Ssh;

/// <summary>Where a machine's SSH server answers.</summary>
public sealed record SshEndpoint(string Host, int Port, string User)
{
    public override string ToString() => $"{User}@{Host}:{Port}";
}

/// <summary>What one SSH connection attempt found.</summary>
public sealed record SshProbeResult(bool Ready, HostKey? PresentedKey, bool KeyMismatch, string? Error);

/// <summary>One look at an SSH server: does the key exchange complete with an acceptable host key?</summary>
public interface ISshProbe
{
    Task<SshProbeResult> ProbeAsync(SshEndpoint endpoint, IReadOnlyList<HostKey> pinnedKeys, TimeSpan attemptTimeout, CancellationToken cancellationToken);
}

/// <summary>
/// Probes with SSH.NET. Only the key exchange matters: the server must prove it holds a pinned host key.
/// Authentication is attempted with "none" only, and its refusal still means "ready".
/// SSH.NET trusts every key unless told otherwise, so the handler decides by comparing key blobs.
/// </summary>
public sealed class SshNetProbe : ISshProbe
{
    public async Task<SshProbeResult> ProbeAsync(SshEndpoint endpoint, IReadOnlyList<HostKey> pinnedKeys, TimeSpan attemptTimeout, CancellationToken cancellationToken)
    {
        var info = new ConnectionInfo(endpoint.Host, endpoint.Port, endpoint.User, new NoneAuthenticationMethod(endpoint.User))
        {
            Timeout = attemptTimeout,
        };

        if (pinnedKeys.Count > 0)
        {
            // Offer only the pinned key types, so a server with several host keys shows the one we can check.
            var allowed = pinnedKeys.SelectMany(k => k.Algorithms).ToHashSet(StringComparer.Ordinal);
            foreach (var algorithm in info.HostKeyAlgorithms.Keys.ToList())
            {
                if (!allowed.Contains(algorithm))
                {
                    info.HostKeyAlgorithms.Remove(algorithm);
                }
            }
        }

        HostKey? presented = null;
        var mismatch = false;
        using var client = new SshClient(info);
        client.HostKeyReceived += (_, e) =>
        {
            presented = HostKey.FromBlob(e.HostKey);
            mismatch = pinnedKeys.Count > 0 && !pinnedKeys.Contains(presented);
            e.CanTrust = !mismatch;
        };

        using var attempt = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        attempt.CancelAfter(attemptTimeout);
        try
        {
            await client.ConnectAsync(attempt.Token).ConfigureAwait(false);
            client.Disconnect();
            return new SshProbeResult(true, presented, false, null);
        }
        catch (SshAuthenticationException) when (presented is not null && !mismatch)
        {
            // The key exchange finished with a trusted key; refusing "none" auth is what a ready server does.
            return new SshProbeResult(true, presented, false, null);
        }
        catch (Exception e) when (mismatch && presented is not null && e is SshException or SocketException or InvalidOperationException)
        {
            return new SshProbeResult(false, presented, true, $"host key mismatch: got {presented.FingerprintSha256}");
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return new SshProbeResult(false, presented, false, $"no SSH handshake within {attemptTimeout.TotalSeconds:0.#} s");
        }
        catch (Exception e) when (e is SocketException or SshException or IOException or ProxyException)
        {
            return new SshProbeResult(false, presented, false, e.Message);
        }
    }
}
