namespace Falk.Core.Waiting;

/// <summary>What one look at a condition found: done (with a value) or not yet (with why).</summary>
public readonly record struct ProbeOutcome<T>(bool IsDone, T? Value, string? NotReadyReason);

public static class ProbeOutcome
{
    public static ProbeOutcome<T> Done<T>(T value) => new(true, value, null);

    public static ProbeOutcome<T> NotYet<T>(string reason) => new(false, default, reason);
}

/// <summary>The one readiness loop: probe at an interval until done, a timeout, or cancellation. No fixed sleeps elsewhere.</summary>
public static class Wait
{
    /// <summary>
    /// Calls <paramref name="probe"/> every <paramref name="interval"/> until it reports done. Exceptions from the probe
    /// end the wait (they mean "never", not "not yet"). After <paramref name="timeout"/> a <see cref="Machines.WaitTimeoutException"/>
    /// carries the last reason. <paramref name="wakeEarly"/>, when it completes, cuts the pause short so the probe
    /// can notice at once (e.g. the machine's process ended).
    /// </summary>
    public static Task<T> UntilAsync<T>(
        Func<CancellationToken, Task<ProbeOutcome<T>>> probe,
        TimeSpan interval,
        TimeSpan timeout,
        string what,
        CancellationToken cancellationToken,
        Task? wakeEarly = null,
        TimeProvider? timeProvider = null) =>
        UntilAsync(probe, _ => interval, timeout, what, cancellationToken, wakeEarly, timeProvider);

    /// <summary>
    /// As above, with the pause after each look chosen by <paramref name="pauseAfter"/> from the time waited so far:
    /// short at first to react at once to something that is about to happen, longer for something slow.
    /// </summary>
    public static async Task<T> UntilAsync<T>(
        Func<CancellationToken, Task<ProbeOutcome<T>>> probe,
        Func<TimeSpan, TimeSpan> pauseAfter,
        TimeSpan timeout,
        string what,
        CancellationToken cancellationToken,
        Task? wakeEarly = null,
        TimeProvider? timeProvider = null)
    {
        timeProvider ??= TimeProvider.System;
        var started = timeProvider.GetTimestamp();
        string? lastReason = null;
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var outcome = await probe(cancellationToken).ConfigureAwait(false);
            if (outcome.IsDone)
            {
                return outcome.Value!;
            }

            lastReason = outcome.NotReadyReason;
            var waited = timeProvider.GetElapsedTime(started);
            var remaining = timeout - waited;
            if (remaining <= TimeSpan.Zero)
            {
                throw new Machines.WaitTimeoutException($"{what} did not happen within {timeout.TotalSeconds:0.#} s", lastReason);
            }

            var interval = pauseAfter(waited);
            var pause = Task.Delay(remaining < interval ? remaining : interval, timeProvider, cancellationToken);
            await (wakeEarly is null ? pause : Task.WhenAny(pause, wakeEarly)).ConfigureAwait(false);
            cancellationToken.ThrowIfCancellationRequested();
        }
    }
}
