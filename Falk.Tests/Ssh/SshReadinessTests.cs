using System.Threading.Channels;
using Falk.Core.Machines;
using Falk.Core.Ssh;
using Microsoft.Extensions.Time.Testing;

namespace Falk.Tests.Ssh;

/// <summary>How often readiness looks, on a fake clock: the pauses between attempts are read off the timers it sets.</summary>
public sealed class SshReadinessTests
{
    [Fact(Timeout = 30_000)]
    public async Task Readiness_looks_again_within_milliseconds_at_first_and_never_waits_more_than_50_ms_between_attempts()
    {
        var ct = TestContext.Current.CancellationToken;
        var time = new PauseRecordingTime();
        var probe = new RefusingProbe();
        var readiness = new SshReadiness(probe, time);

        var waiting = readiness.WaitAsync(new SshEndpoint("127.0.0.1", 2222, "root"), [], TimeSpan.FromSeconds(5), null, () => { }, ct);
        var pauses = new List<TimeSpan>();
        while (true)
        {
            // Each attempt sets one timer for the pause after it; move the clock to its end.
            var next = time.NextPause.Reader.ReadAsync(ct).AsTask();
            if (await Task.WhenAny(next, waiting) == waiting)
            {
                break;
            }

            var pause = await next;
            pauses.Add(pause);
            time.Advance(pause);
        }

        await waiting.Invoking(w => w).Should().ThrowAsync<WaitTimeoutException>();
        pauses.First().Should().BeLessThanOrEqualTo(TimeSpan.FromMilliseconds(5), "a container's sshd answers within a few hundred ms: the first looks come at once");
        pauses.Max().Should().BeLessThanOrEqualTo(TimeSpan.FromMilliseconds(50), "a VM's sshd is seen within 50 ms of answering");
        var beforeTheLast = pauses.SkipLast(1).ToList();
        beforeTheLast.Skip(1).Zip(beforeTheLast).Should().OnlyContain(p => p.First >= p.Second, "the pause grows with the time waited (the last one is cut to the timeout)");
        probe.Attempts.Should().BeGreaterThan(5000 / 50, "over 5 s a fixed 50 ms would look 100 times; the short pauses at first add more");
    }

    /// <summary>A fake clock that hands each timer's due time to the test, which then advances the clock by it.</summary>
    private sealed class PauseRecordingTime : FakeTimeProvider
    {
        public Channel<TimeSpan> NextPause { get; } = Channel.CreateUnbounded<TimeSpan>();

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            var timer = base.CreateTimer(callback, state, dueTime, period);
            NextPause.Writer.TryWrite(dueTime);
            return timer;
        }
    }

    private sealed class RefusingProbe : ISshProbe
    {
        private int _attempts;

        public int Attempts => Volatile.Read(ref _attempts);

        public Task<SshProbeResult> ProbeAsync(SshEndpoint endpoint, IReadOnlyList<HostKey> pinnedKeys, TimeSpan attemptTimeout, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref _attempts);
            return Task.FromResult(new SshProbeResult(false, null, false, "connection refused"));
        }
    }
}
