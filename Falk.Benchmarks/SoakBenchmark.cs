using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Json;
using System.Text.Json.Nodes;

namespace Falk.Benchmarks;

/// <summary>
/// Many lifecycles on the custom backend (create → boot?wait=ssh → delete of a real sshd), sequential and then
/// concurrent, watching falkd's file descriptors, threads and memory: after warm-up they must not grow.
/// </summary>
public static class SoakBenchmark
{
    public static async Task<int> RunAsync(string[] args, CancellationToken cancellationToken)
    {
        var sequential = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 1000;
        var concurrent = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 1000;
        var parallelism = args.Length > 2 ? int.Parse(args[2], CultureInfo.InvariantCulture) : 20;
        var bench = await SshdWorkbench.StartAsync("[28000,28199]", cancellationToken);
        await using (bench)
        {
            var client = bench.Client;
            var daemon = bench.Daemon;
            Console.WriteLine($"soak: custom backend (Debian sshd), falkd pid {daemon.Pid}");
            Console.WriteLine($"{"phase",-34} {"done",6} {"failed",6} {"fds",5} {"threads",7} {"rss MiB",8} {"lifecycles/s",12}");
            var failures = 0;
            var done = 0;
            var watch = Stopwatch.StartNew();
            Report("start", daemon.Pid, done, failures, watch);

            for (var i = 1; i <= sequential; i++)
            {
                failures += await LifecycleAsync(client, cancellationToken) ? 0 : 1;
                done++;
                if (i == 100 || i % 250 == 0)
                {
                    await SettleAsync(client, cancellationToken);
                    Report(i == 100 ? "sequential (after warm-up)" : "sequential", daemon.Pid, done, failures, watch);
                }
            }

            watch.Restart();
            var remaining = concurrent;
            var concurrentDone = 0;
            await Task.WhenAll(Enumerable.Range(0, parallelism).Select(async _ =>
            {
                while (Interlocked.Decrement(ref remaining) >= 0)
                {
                    var ok = await LifecycleAsync(client, cancellationToken);
                    if (!ok)
                    {
                        Interlocked.Increment(ref failures);
                    }

                    var n = Interlocked.Increment(ref concurrentDone);
                    if (n % 250 == 0)
                    {
                        Report($"{parallelism}-way concurrent", daemon.Pid, n, failures, watch);
                    }
                }
            }));
            await SettleAsync(client, cancellationToken);
            Report($"{parallelism}-way concurrent, settled", daemon.Pid, concurrentDone, failures, watch);
            Console.WriteLine(failures == 0 ? "no failures" : $"{failures} FAILURES");
            return failures == 0 ? 0 : 1;
        }
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

    private static void Report(string phase, int pid, int done, int failures, Stopwatch watch)
    {
        var fds = Directory.GetFiles($"/proc/{pid}/fd").Length;
        var rate = done / Math.Max(watch.Elapsed.TotalSeconds, 0.001);
        Console.WriteLine($"{phase,-34} {done,6} {failures,6} {fds,5} {ProcessFigures.Status(pid, "Threads"),7} {ProcessFigures.RssMiB(pid),8:0.0} {rate,12:0.0}");
    }
}
