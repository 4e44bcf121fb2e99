using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Falk.Client;
using Falk.Core.Waiting;
using Falk.Tests.Fixtures;

namespace Falk.Benchmarks;

/// <summary>
/// Ready latency with and without a warm pool: the time from a create request to a running machine whose SSH server
/// showed its pinned host key (create, then <c>boot?wait=ssh</c>, as the README's flow does), for a template with a
/// machine waiting in its pool (<c>pool_size</c>) against the same template made cold, interleaved. Before each pooled
/// run the benchmark waits, untimed, until the pool is full again; deletes are not timed. Also the memory the idle
/// pool's machines hold, from the process table (custom) or podman's container stats.
/// </summary>
public static class PoolBenchmark
{
    public static async Task<int> RunAsync(string[] args, CancellationToken cancellationToken)
    {
        var backend = "custom";
        var runs = 20;
        var poolSize = 2;
        for (var i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--backend" when i + 1 < args.Length:
                    backend = args[++i];
                    break;
                case "--pool-size" when i + 1 < args.Length:
                    poolSize = int.Parse(args[++i], CultureInfo.InvariantCulture);
                    break;
                default:
                    runs = int.Parse(args[i], CultureInfo.InvariantCulture);
                    break;
            }
        }

        return backend switch
        {
            "custom" => await CustomAsync(runs, poolSize, cancellationToken),
            "podman" => await PodmanAsync(runs, poolSize, cancellationToken),
            _ => Usage(),
        };
    }

    private static int Usage()
    {
        Console.Error.WriteLine("usage: falk-bench pool [--backend custom|podman] [--pool-size N] [runs]");
        return 2;
    }

    private static async Task<int> CustomAsync(int runs, int poolSize, CancellationToken cancellationToken)
    {
        var bench = await SshdWorkbench.StartAsync("[28400,28499]", cancellationToken, poolSize: poolSize);
        await using (bench)
        {
            await MeasureAsync(bench.Client, $"custom backend (Debian sshd), pool_size = {poolSize}", "sshd", runs, poolSize, cancellationToken);
            var rss = ProcessTable.WithArgument("-f " + bench.SshdConfig).Sum(ResidentKiB);
            Console.WriteLine($"{"idle pool: sshd resident memory",-40} {rss / 1024.0:0.0} MiB for {poolSize} machines");
            return 0;
        }
    }

    private static async Task<int> PodmanAsync(int runs, int poolSize, CancellationToken cancellationToken)
    {
        await PodmanBenchmark.BuildImageAsync(cancellationToken);
        var work = WorkFolder.Create();
        var instance = "falk-bench-" + Guid.NewGuid().ToString("N")[..8];
        var podmanSocket = Path.Combine(work, "podman.sock");
        var service = await PodmanBenchmark.StartServiceAsync(podmanSocket, cancellationToken);
        try
        {
            var socket = Path.Combine(work, "falk.sock");
            var config = Path.Combine(work, "falk.conf");
            var template = $"""
                type = podman
                base_image = {PodmanBenchmark.TestImage}
                ssh_user = chantal
                ssh_host = 127.0.0.1
                """;
            await File.WriteAllTextAsync(config, $"""
                [falk]
                name = {instance}
                control_socket = {socket}
                state_dir = {Path.Combine(work, "state")}
                vm_ports = [28500,28599]
                podman_socket = unix://{podmanSocket}
                on_shutdown = destroy
                [sshd]
                {template}
                [warm]
                {template}
                pool_size = {poolSize}
                """, cancellationToken);

            using var client = FalkHttp.CreateClient(socket, TimeSpan.FromMinutes(2));
            var daemon = await LocalFalkd.StartAsync(config, client, null, cancellationToken);
            await using (daemon)
            {
                await MeasureAsync(client, $"podman backend ({PodmanBenchmark.TestImage}), pool_size = {poolSize}", "sshd", runs, poolSize, cancellationToken);
                // Each machine is a container named after it; the pooled ones are the daemon's (owner -1).
                using var list = await client.GetAsync("v1/machines", cancellationToken);
                var pooledIds = JsonNode.Parse(await list.Content.ReadAsStringAsync(cancellationToken))!.AsArray()
                    .Where(m => m!["owner_uid"]!.GetValue<int>() == -1).Select(m => m!["id"]!.GetValue<string>()).ToList();
                var stats = await new Falk.Core.Processes.ProcessRunner().RunAsync(new Falk.Core.Processes.ProcessSpec(
                    ["podman", "--url", "unix://" + podmanSocket, "stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}} {{.CPU}}", .. pooledIds]), TimeSpan.FromMinutes(1), cancellationToken);
                Console.WriteLine($"idle pool: podman stats of its {poolSize} containers (name, memory, cpu):");
                Console.WriteLine(stats.StdoutTail.TrimEnd());
            }

            return 0;
        }
        finally
        {
            await service.StopAsync(TimeSpan.FromSeconds(10), CancellationToken.None);
            await service.DisposeAsync();
            Directory.Delete(work, recursive: true);
        }
    }

    private static async Task MeasureAsync(HttpClient client, string title, string coldTemplate, int runs, int poolSize, CancellationToken cancellationToken)
    {
        var pooled = new List<double>();
        var cold = new List<double>();
        var pooledCreate = new List<double>();
        for (var i = 0; i < runs + 2; i++)
        {
            await WaitForFullPoolAsync(client, poolSize, cancellationToken);
            var (warmTotal, warmCreate) = await ReadyAsync(client, "warm", expectPooled: true, cancellationToken);
            var (coldTotal, _) = await ReadyAsync(client, coldTemplate, expectPooled: false, cancellationToken);
            if (i >= 2)
            {
                // The first two runs warm up the JIT, the connections and the caches on both sides.
                pooled.Add(warmTotal);
                pooledCreate.Add(warmCreate);
                cold.Add(coldTotal);
            }
        }

        Console.WriteLine($"{title}, {runs} interleaved runs after 2 warm-up runs");
        Console.WriteLine(Stats.Describe("pooled: create → running, verified", pooled));
        Console.WriteLine(Stats.Describe("  of which the create answer", pooledCreate));
        Console.WriteLine(Stats.Describe("cold: create+boot?wait=ssh", cold));
        Console.WriteLine($"{"ratio of medians (cold / pooled)",-40} {Stats.Median(cold) / Stats.Median(pooled):0.0}");
        await WaitForFullPoolAsync(client, poolSize, cancellationToken);
    }

    /// <summary>Create, then <c>boot?wait=ssh</c>; returns the time until that answered and until the create answered. The machine is then deleted, untimed.</summary>
    private static async Task<(double Total, double Create)> ReadyAsync(HttpClient client, string template, bool expectPooled, CancellationToken cancellationToken)
    {
        var watch = Stopwatch.StartNew();
        using var created = await client.PostAsJsonAsync("v1/machines", new { template }, cancellationToken);
        await created.EnsureSuccessAsync(cancellationToken);
        var machine = JsonNode.Parse(await created.Content.ReadAsStringAsync(cancellationToken))!;
        var create = watch.Elapsed.TotalMilliseconds;
        var id = machine["id"]!.GetValue<string>();
        using var booted = await client.PostAsync($"v1/machines/{id}/boot?wait=ssh&timeout=60", null, cancellationToken);
        await booted.EnsureSuccessAsync(cancellationToken);
        var total = watch.Elapsed.TotalMilliseconds;
        var wasPooled = machine["state"]!.GetValue<string>() == "running";
        if (wasPooled != expectPooled)
        {
            throw new InvalidOperationException($"machine {id} of {template} was {(wasPooled ? string.Empty : "not ")}from the pool");
        }

        using var deleted = await client.DeleteAsync($"v1/machines/{id}", cancellationToken);
        await deleted.EnsureSuccessAsync(cancellationToken);
        return (total, create);
    }

    private static Task<bool> WaitForFullPoolAsync(HttpClient client, int poolSize, CancellationToken cancellationToken) =>
        Wait.UntilAsync(async ct =>
        {
            using var info = await client.GetAsync("v1/info", ct);
            var pool = JsonNode.Parse(await info.Content.ReadAsStringAsync(ct))!["pools"]!.AsArray().Single()!;
            return pool["ready"]!.GetValue<int>() == poolSize ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>($"{pool["ready"]} ready");
        }, TimeSpan.FromMilliseconds(20), TimeSpan.FromMinutes(2), "a full warm pool", cancellationToken);

    private static long ResidentKiB(int pid)
    {
        try
        {
            var line = File.ReadLines($"/proc/{pid}/status").FirstOrDefault(l => l.StartsWith("VmRSS:", StringComparison.Ordinal));
            return line is null ? 0 : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
        }
        catch (IOException)
        {
            return 0;
        }
    }
}
