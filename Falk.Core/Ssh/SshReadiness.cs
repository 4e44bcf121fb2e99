using Falk.Core.Waiting;

namespace Falk.Core.Ssh;

/// <summary>Waits until a machine's SSH server completes a key exchange with a pinned host key.</summary>
public sealed class SshReadiness(ISshProbe probe, TimeProvider timeProvider)
{
    /// <summary>
    /// Pause between attempts. Short for every backend: an attempt on a local port costs next to nothing, and each
    /// pause is time a job waits for a machine that may already answer.
    /// </summary>
    public static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// One attempt's limit. A port forwarder (a VM's user network, a container's port handler) may accept a connection
    /// before anything listens behind it and then hold it silent: such a connection must not eat the whole wait.
    /// </summary>
    public static readonly TimeSpan AttemptTimeout = TimeSpan.FromSeconds(1.5);

    /// <summary>
    /// Returns the presented key once ready. A key other than the pinned ones throws <see cref="HostKeyMismatchException"/>
    /// at once; running out of time throws <see cref="Machines.WaitTimeoutException"/> with the last probe error.
    /// <paramref name="abort"/> is checked after every attempt and may throw (e.g. the machine's process ended).
    /// </summary>
    public Task<HostKey> WaitAsync(
        SshEndpoint endpoint,
        IReadOnlyList<HostKey> pinnedKeys,
        TimeSpan timeout,
        Task? wakeEarly,
        Action abort,
        CancellationToken cancellationToken) =>
        Wait.UntilAsync(
            async ct =>
            {
                abort();
                var result = await probe.ProbeAsync(endpoint, pinnedKeys, AttemptTimeout, ct).ConfigureAwait(false);
                if (result.KeyMismatch)
                {
                    throw new HostKeyMismatchException(endpoint.ToString(), pinnedKeys, result.PresentedKey!);
                }

                abort();
                return result.Ready
                    ? ProbeOutcome.Done(result.PresentedKey!)
                    : ProbeOutcome.NotYet<HostKey>(result.Error ?? "not ready");
            },
            Interval,
            timeout,
            $"SSH on {endpoint}",
            cancellationToken,
            wakeEarly,
            timeProvider);
}
