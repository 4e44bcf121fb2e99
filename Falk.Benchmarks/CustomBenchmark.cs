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
            var steps = new List<(double Create, double Boot, double Delete)>();
            var direct = new List<(double Ready, double Kill)>();
            for (var i = 0; i < runs + 2; i++)
            {
                var falk = await ThroughFalkAsync(bench.Client, cancellationToken);
                var hand = await ByHandAsync(runner, readiness, bench.SshdConfig, bench.HostKey, 27900 + (i % 50), cancellationToken);
                if (i >= 2)
                {
                    // The first two runs warm up the JIT and the page cache on both sides.
                    viaFalk.Add(falk.Create + falk.Boot + falk.Delete);
                    steps.Add(falk);
                    direct.Add(hand);
                }
            }

            Console.WriteLine($"falk-bench custom {runs}: custom backend (Debian sshd), {runs} interleaved runs after 2 warm-up runs, {Environment.ProcessorCount} cores, load average {ProcessFigures.LoadAverage()}");
            Console.WriteLine(Stats.Describe("through Falk: create+boot?wait=ssh+delete", viaFalk));
            var byHand = direct.Select(d => d.Ready + d.Kill).ToList();
            Console.WriteLine(Stats.Describe("by hand: start sshd+same probe+kill", byHand));
            Console.WriteLine($"{"ratio of medians (Falk / by hand)",-40} {Stats.Median(viaFalk) / Stats.Median(byHand):0.00}");
            Console.WriteLine($"{"Falk's overhead (difference of medians)",-40} {Stats.Median(viaFalk) - Stats.Median(byHand):0.0} ms");
            Console.WriteLine("per step:");
            Console.WriteLine(Stats.Describe("  Falk: POST /v1/machines", steps.Select(s => s.Create).ToList()));
            Console.WriteLine(Stats.Describe("  Falk: boot?wait=ssh", steps.Select(s => s.Boot).ToList()));
            Console.WriteLine(Stats.Describe("  Falk: DELETE (running)", steps.Select(s => s.Delete).ToList()));
            Console.WriteLine(Stats.Describe("  by hand: start sshd+probe", direct.Select(d => d.Ready).ToList()));
            Console.WriteLine(Stats.Describe("  by hand: kill, reaped", direct.Select(d => d.Kill).ToList()));
            return 0;
        }
    }

    private static async Task<(double Create, double Boot, double Delete)> ThroughFalkAsync(HttpClient client, CancellationToken cancellationToken)
    {
        var watch = Stopwatch.StartNew();
        using var created = await client.PostAsJsonAsync("v1/machines", new { template = "sshd" }, cancellationToken);
        await created.EnsureSuccessAsync(cancellationToken);
        var id = JsonNode.Parse(await created.Content.ReadAsStringAsync(cancellationToken))!["id"]!.GetValue<string>();
        var create = watch.Elapsed.TotalMilliseconds;
        using var booted = await client.PostAsync($"v1/machines/{id}/boot?wait=ssh&timeout=60", null, cancellationToken);
        await booted.EnsureSuccessAsync(cancellationToken);
        var boot = watch.Elapsed.TotalMilliseconds;
        using var deleted = await client.DeleteAsync($"v1/machines/{id}", cancellationToken);
        await deleted.EnsureSuccessAsync(cancellationToken);
        return (create, boot - create, watch.Elapsed.TotalMilliseconds - boot);
    }

    private static async Task<(double Ready, double Kill)> ByHandAsync(ProcessRunner runner, SshReadiness readiness, string sshdConfig, HostKey key, int port, CancellationToken cancellationToken)
    {
        var watch = Stopwatch.StartNew();
        var sshd = runner.Start(new ProcessSpec(["/usr/sbin/sshd", "-D", "-e", "-p", port.ToString(CultureInfo.InvariantCulture), "-f", sshdConfig]) { OwnProcessGroup = true });
        await using (sshd)
        {
            await readiness.WaitAsync(new SshEndpoint("127.0.0.1", port, "root"), [key], TimeSpan.FromSeconds(60), sshd.Exited, () => { }, cancellationToken);
            var ready = watch.Elapsed.TotalMilliseconds;
            await sshd.KillAsync(cancellationToken);
            return (ready, watch.Elapsed.TotalMilliseconds - ready);
        }
    }
}
