using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Falk.Client;

namespace Falk.Benchmarks;

/// <summary>
/// Many lifecycles on the custom backend (create → boot?wait=ssh → delete of a real sshd), sequential and then
/// concurrent, watching falkd's file descriptors, threads and memory; then an idle phase, after which it gives its own
/// verdict: against the sample taken after warm-up, open fds and threads must be back within a few and resident memory
/// within a stated bound. Growth beyond it is reported (and the exit status is 1), not left to the eye.
/// </summary>
public static class SoakBenchmark
{
    /// <summary>Extra fds allowed after the idle phase: the client's one connection, a log or database file reopened.</summary>
    private const int FdBound = 8;

    /// <summary>Extra threads allowed: the thread pool keeps a few of the workers a burst made.</summary>
    private const int ThreadBound = 8;

    /// <summary>Extra resident memory allowed (MiB) over the sample after warm-up, which already holds what a burst grew.</summary>
    private const double RssBoundMiB = 16;

    private sealed record Sample(int Fds, long Threads, double RssMiB);

    public static async Task<int> RunAsync(string[] args, CancellationToken cancellationToken)
    {
        var sequential = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 1000;
        var concurrent = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 1000;
        var parallelism = args.Length > 2 ? int.Parse(args[2], CultureInfo.InvariantCulture) : 20;
        var idle = TimeSpan.FromSeconds(args.Length > 3 ? int.Parse(args[3], CultureInfo.InvariantCulture) : 60);
        var logPath = Path.Combine(Path.GetTempPath(), $"falk-bench-soak-{Environment.ProcessId}.log");
        using var log = TextWriter.Synchronized(new StreamWriter(logPath) { AutoFlush = true });
        var bench = await SshdWorkbench.StartAsync("[28000,28199]", cancellationToken, log);
        await using (bench)
        {
            Console.WriteLine($"falkd's output goes to {logPath}");
            var client = bench.Client;
            var daemon = bench.Daemon;
            Console.WriteLine($"falk-bench soak {sequential} {concurrent} {parallelism} {idle.TotalSeconds:0}: custom backend (Debian sshd), falkd pid {daemon.Pid}, "
                + $"{Environment.ProcessorCount} cores, load average {ProcessFigures.LoadAverage()}");
            Console.WriteLine($"{"phase",-34} {"done",6} {"failed",6} {"fds",5} {"threads",7} {"rss MiB",8} {"lifecycles/s",12}");
            var failures = 0;
            var done = 0;
            var watch = Stopwatch.StartNew();
            Report("start", daemon.Pid, done, failures, watch);

            // Warm-up, sequential and concurrent: the JIT, the thread pool and the GC's heaps grow to what a burst of
            // parallel lifecycles needs once. The baseline is taken after it; what grows later is what the verdict is about.
            var warmUpBurst = 5 * parallelism;
            for (var i = 0; i < 50; i++)
            {
                failures += await LifecycleAsync(client, cancellationToken) ? 0 : 1;
            }

            failures += await BurstAsync(bench.Socket, warmUpBurst, parallelism, null, cancellationToken);
            await SettleAsync(client, cancellationToken);
            var baseline = Report($"after warm-up (50 + {warmUpBurst} {parallelism}-way)", daemon.Pid, 50 + warmUpBurst, failures, watch);

            watch.Restart();
            for (var i = 1; i <= sequential; i++)
            {
                failures += await LifecycleAsync(client, cancellationToken) ? 0 : 1;
                done++;
                if (i % 250 == 0 || i == sequential)
                {
                    await SettleAsync(client, cancellationToken);
                    Report("sequential", daemon.Pid, done, failures, watch);
                }
            }

            watch.Restart();
            var concurrentDone = 0;
            failures += await BurstAsync(bench.Socket, concurrent, parallelism, () =>
            {
                var n = Interlocked.Increment(ref concurrentDone);
                if (n % 250 == 0)
                {
                    Report($"{parallelism}-way concurrent", daemon.Pid, n, Volatile.Read(ref failures), watch);
                }
            }, cancellationToken);

            await SettleAsync(client, cancellationToken);
            Report($"{parallelism}-way concurrent, settled", daemon.Pid, concurrentDone, failures, watch);

            var idleWatch = Stopwatch.StartNew();
            Sample last;
            do
            {
                await Task.Delay(TimeSpan.FromSeconds(Math.Min(10, idle.TotalSeconds)), cancellationToken);
                last = Report($"idle {idleWatch.Elapsed.TotalSeconds:0} s", daemon.Pid, 0, failures, idleWatch);
            }
            while (idleWatch.Elapsed < idle);

            using (var _ = await client.GetAsync("v1/info", cancellationToken))
            {
                // One request, so the sample after it counts the client's connection as the baseline did.
            }

            last = Report("idle, after one request", daemon.Pid, 0, failures, idleWatch);
            Console.WriteLine(failures == 0 ? "no failures" : $"{failures} FAILURES");
            var grew = Verdict("fds", baseline.Fds, last.Fds, FdBound, "")
                | Verdict("threads", baseline.Threads, last.Threads, ThreadBound, "")
                | Verdict("RSS", baseline.RssMiB, last.RssMiB, RssBoundMiB, " MiB");
            Console.WriteLine($"{"RSS after " + (50 + (5 * parallelism) + sequential + concurrent) + " lifecycles and idle",-34} {last.RssMiB:0.0} MiB (issue 17's target: at most 80 MB = {80_000_000 / 1048576.0:0.0} MiB): {(last.RssMiB * 1048576 <= 80_000_000 ? "met" : "NOT met")}");
            Console.WriteLine(grew ? "verdict: GROWTH beyond the bounds" : "verdict: no growth beyond the bounds");
            return failures == 0 && !grew ? 0 : 1;
        }
    }

    /// <summary>
    /// <paramref name="count"/> lifecycles from <paramref name="parallelism"/> clients at once; returns the failures. The
    /// clients' connections are the benchmark's, not falkd's: they are closed when it returns.
    /// </summary>
    private static async Task<int> BurstAsync(string socket, int count, int parallelism, Action? afterEach, CancellationToken cancellationToken)
    {
        var remaining = count;
        var failures = 0;
        using var burst = FalkHttp.CreateClient(socket, TimeSpan.FromMinutes(2));
        await Task.WhenAll(Enumerable.Range(0, parallelism).Select(async _ =>
        {
            while (Interlocked.Decrement(ref remaining) >= 0)
            {
                if (!await LifecycleAsync(burst, cancellationToken))
                {
                    Interlocked.Increment(ref failures);
                }

                afterEach?.Invoke();
            }
        }));
        return failures;
    }

    /// <summary>Prints one line comparing the end with the baseline; true when it grew beyond <paramref name="bound"/>.</summary>
    private static bool Verdict(string what, double baseline, double end, double bound, string unit)
    {
        var grew = end - baseline > bound;
        Console.WriteLine($"{what + " after idle vs after warm-up",-36} {end:0.#}{unit} vs {baseline:0.#}{unit} (bound +{bound}{unit}): {(grew ? "GREW" : "ok")}");
        return grew;
    }

    internal static async Task<bool> LifecycleAsync(HttpClient client, CancellationToken cancellationToken)
    {
        using var created = await client.PostAsJsonAsync("v1/machines", new { template = "sshd" }, cancellationToken);
        if (!created.IsSuccessStatusCode)
        {
            await Console.Error.WriteLineAsync($"create: {(int)created.StatusCode} {await created.Content.ReadAsStringAsync(cancellationToken)}");
            return false;
        }

        var id = JsonNode.Parse(await created.Content.ReadAsStringAsync(cancellationToken))!["id"]!.GetValue<string>();
        using var booted = await client.PostAsync($"v1/machines/{id}/boot?wait=ssh&timeout=60", null, cancellationToken);
        if (!booted.IsSuccessStatusCode)
        {
            await Console.Error.WriteLineAsync($"boot {id}: {(int)booted.StatusCode} {await booted.Content.ReadAsStringAsync(cancellationToken)}");
        }

        using var deleted = await client.DeleteAsync($"v1/machines/{id}", cancellationToken);
        return booted.IsSuccessStatusCode && deleted.IsSuccessStatusCode;
    }

    /// <summary>Lets timers and finalizers run, so a sample shows what is kept, not what is on its way out.</summary>
    private static async Task SettleAsync(HttpClient client, CancellationToken cancellationToken)
    {
        await Task.Delay(TimeSpan.FromSeconds(2), cancellationToken);
        using var _ = await client.GetAsync("v1/info", cancellationToken);
    }

    private static Sample Report(string phase, int pid, int done, int failures, Stopwatch watch)
    {
        var sample = new Sample(Directory.GetFiles($"/proc/{pid}/fd").Length, ProcessFigures.Status(pid, "Threads"), ProcessFigures.RssMiB(pid));
        var rate = done / Math.Max(watch.Elapsed.TotalSeconds, 0.001);
        Console.WriteLine($"{phase,-34} {done,6} {failures,6} {sample.Fds,5} {sample.Threads,7} {sample.RssMiB,8:0.0} {rate,12:0.0}  load {ProcessFigures.LoadAverage()}");
        return sample;
    }
}
