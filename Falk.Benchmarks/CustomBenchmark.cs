using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Falk.Core.Processes;
using Falk.Core.Ssh;

namespace Falk.Benchmarks;

/// <summary>
/// create → boot?wait=ssh → delete of a custom template running Debian's sshd, through Falk, against the same sshd
/// started by hand and polled for the SSH key exchange with the same probe: what Falk itself adds.
/// </summary>
public static class CustomBenchmark
{
    public static async Task<int> RunAsync(string[] args, CancellationToken cancellationToken)
    {
        var runs = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 20;
        var bench = await SshdWorkbench.StartAsync("[27800,27899]", cancellationToken);
        await using (bench)
        {
            var runner = new ProcessRunner();
            var readiness = new SshReadiness(new SshNetProbe(), TimeProvider.System);
            var viaFalk = new List<double>();
            var direct = new List<double>();
            for (var i = 0; i < runs + 2; i++)
            {
                var falk = await ThroughFalkAsync(bench.Client, cancellationToken);
                var hand = await ByHandAsync(runner, readiness, bench.SshdConfig, bench.HostKey, 27900 + (i % 50), cancellationToken);
                if (i >= 2)
                {
                    // The first two runs warm up the JIT and the page cache on both sides.
                    viaFalk.Add(falk);
                    direct.Add(hand);
                }
            }

            Console.WriteLine($"falk-bench custom {runs}: custom backend (Debian sshd), {runs} interleaved runs after 2 warm-up runs, {Environment.ProcessorCount} cores, load average {ProcessFigures.LoadAverage()}");
            Console.WriteLine(Stats.Describe("through Falk: create+boot?wait=ssh+delete", viaFalk));
            Console.WriteLine(Stats.Describe("by hand: start sshd+same probe+kill", direct));
            Console.WriteLine($"{"ratio of medians (Falk / by hand)",-40} {Stats.Median(viaFalk) / Stats.Median(direct):0.00}");
            Console.WriteLine($"{"Falk's overhead (difference of medians)",-40} {Stats.Median(viaFalk) - Stats.Median(direct):0.0} ms");
            return 0;
        }
    }

    private static async Task<double> ThroughFalkAsync(HttpClient client, CancellationToken cancellationToken)
    {
        var watch = Stopwatch.StartNew();
        using var created = await client.PostAsJsonAsync("v1/machines", new { template = "sshd" }, cancellationToken);
        created.EnsureSuccessStatusCode();
        var id = JsonNode.Parse(await created.Content.ReadAsStringAsync(cancellationToken))!["id"]!.GetValue<string>();
        using var booted = await client.PostAsync($"v1/machines/{id}/boot?wait=ssh&timeout=60", null, cancellationToken);
        booted.EnsureSuccessStatusCode();
        using var deleted = await client.DeleteAsync($"v1/machines/{id}", cancellationToken);
        deleted.EnsureSuccessStatusCode();
        return watch.Elapsed.TotalMilliseconds;
    }

    private static async Task<double> ByHandAsync(ProcessRunner runner, SshReadiness readiness, string sshdConfig, HostKey key, int port, CancellationToken cancellationToken)
    {
        var watch = Stopwatch.StartNew();
        var sshd = runner.Start(new ProcessSpec(["/usr/sbin/sshd", "-D", "-e", "-p", port.ToString(CultureInfo.InvariantCulture), "-f", sshdConfig]) { OwnProcessGroup = true });
        await using (sshd)
        {
            await readiness.WaitAsync(new SshEndpoint("127.0.0.1", port, "root"), [key], TimeSpan.FromSeconds(60), sshd.Exited, () => { }, cancellationToken);
            await sshd.KillAsync(cancellationToken);
        }

        return watch.Elapsed.TotalMilliseconds;
    }
}
