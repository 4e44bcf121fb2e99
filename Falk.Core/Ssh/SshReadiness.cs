using Falk.Core.Waiting;

namespace Falk.Core.Ssh;

/// <summary>Waits until a machine's SSH server completes a key exchange with a pinned host key.</summary>
public sealed class SshReadiness(ISshProbe probe, TimeProvider timeProvider)
{
    /// <summary>The first pauses between attempts: an attempt on a port nothing listens on yet is refused at once and costs next to nothing.</summary>
    public static readonly TimeSpan ShortestPause = TimeSpan.FromMilliseconds(5);

    /// <summary>The longest pause, for a machine that takes seconds (a VM's boot).</summary>
    public static readonly TimeSpan LongestPause = TimeSpan.FromMilliseconds(50);

    /// <summary>
    /// The pause after an attempt: a twentieth of the time waited so far, between <see cref="ShortestPause"/> and
    /// <see cref="LongestPause"/>. A container's sshd answers within a few hundred ms and is seen within a few ms of
    /// its port opening; a VM's within seconds, seen within 50 ms. Each pause is time a job may wait for a machine
    /// that already answers, so none is the fixed 100 ms it once was.
    /// </summary>
    public static TimeSpan PauseAfter(TimeSpan waited) =>
        TimeSpan.FromTicks(Math.Clamp(waited.Ticks / 20, ShortestPause.Ticks, LongestPause.Ticks));

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
            PauseAfter,
            timeout,
            $"SSH on {endpoint}",
            cancellationToken,
            wakeEarly,
            timeProvider);
}
