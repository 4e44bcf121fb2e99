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
    public static async Task<T> UntilAsync<T>(
        Func<CancellationToken, Task<ProbeOutcome<T>>> probe,
        TimeSpan interval,
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
            var remaining = timeout - timeProvider.GetElapsedTime(started);
            if (remaining <= TimeSpan.Zero)
            {
                throw new Machines.WaitTimeoutException($"{what} did not happen within {timeout.TotalSeconds:0.#} s", lastReason);
            }

            var pause = Task.Delay(remaining < interval ? remaining : interval, timeProvider, cancellationToken);
            await (wakeEarly is null ? pause : Task.WhenAny(pause, wakeEarly)).ConfigureAwait(false);
            cancellationToken.ThrowIfCancellationRequested();
        }
    }
}
