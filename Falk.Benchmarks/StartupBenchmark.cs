using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Json;
using Falk.Client;
using Falk.Core.Backends;
using Falk.Core.Config;
using Falk.Core.State;
using Falk.Tests.Fixtures;

namespace Falk.Benchmarks;

/// <summary>
/// falkd's start-up and memory: start → first <c>/healthz</c> answer with no machines, resident memory at that answer,
/// idle after a settle, and after some custom lifecycles (create → boot?wait=ssh → delete of a real sshd); then start →
/// first <c>/healthz</c> with recorded machines that are gone (written into the state directory's store while no
/// daemon runs), which the daemon cleans up before it answers. Variants (runtime settings as <c>DOTNET_*</c>
/// environment, or another falkd build) are run interleaved, round by round.
/// </summary>
public static class StartupBenchmark
{
    /// <summary>A way to start falkd: a name, environment added, and optionally another falkd executable.</summary>
    private sealed record Variant(string Name, IReadOnlyDictionary<string, string?> Environment, string? Executable)
    {
        /// <summary><c>name</c>, or <c>name:VAR=value,VAR=value</c>; <c>EXE=/path/falkd</c> starts another build.</summary>
        public static Variant Parse(string text)
        {
            var colon = text.IndexOf(':', StringComparison.Ordinal);
            if (colon < 0)
            {
                return new Variant(text, new Dictionary<string, string?>(), null);
            }

            var settings = text[(colon + 1)..].Split(',', StringSplitOptions.RemoveEmptyEntries)
                .Select(s => s.Split('=', 2))
                .ToDictionary(p => p[0], p => (string?)p[1], StringComparer.Ordinal);
            settings.Remove("EXE", out var executable);
            return new Variant(text[..colon], settings, executable);
        }
    }

    private sealed class Figures
    {
        public List<double> Start { get; } = [];

        public List<double> RssAtHealthz { get; } = [];

        public List<double> RssIdle { get; } = [];

        public List<double> RssAfterLifecycles { get; } = [];

        public List<double> Recovery { get; } = [];
    }

    public static async Task<int> RunAsync(string[] args, CancellationToken cancellationToken)
    {
        var rounds = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 5;
        var lifecycles = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 20;
        var records = args.Length > 2 ? int.Parse(args[2], CultureInfo.InvariantCulture) : 100;
        var variants = args.Length > 3 ? args[3..].Select(Variant.Parse).ToList() : [new Variant("as built", new Dictionary<string, string?>(), null)];
        var figures = variants.ToDictionary(v => v, _ => new Figures());
        var failures = 0;

        Console.WriteLine($"startup: falkd start → first /healthz (0 machines; {records} recorded machines that are gone), RSS at that answer, idle after 2 s, after {lifecycles} custom lifecycles + 2 s; {rounds} rounds, {variants.Count} variants interleaved; load average {File.ReadAllText("/proc/loadavg").Trim()}");
        Console.WriteLine($"{"round",5} {"variant",-24} {"start ms",9} {"rss@healthz",11} {"rss idle",9} {"rss after",9} {"recover ms",10}");
        for (var round = 1; round <= rounds; round++)
        {
            foreach (var variant in variants)
            {
                var f = figures[variant];
                try
                {
                    await RoundAsync(variant, f, lifecycles, records, cancellationToken);
                }
                catch (Exception e) when (e is InvalidOperationException or Falk.Core.Machines.WaitTimeoutException or HttpRequestException or IOException)
                {
                    // One run lost (e.g. a start that did not answer within 30 s under load) keeps the others' figures.
                    failures++;
                    Console.WriteLine($"{round,5} {variant.Name,-24} FAILED: {e.GetType().Name}: {e.Message}");
                    continue;
                }

                Console.WriteLine($"{round,5} {variant.Name,-24} {f.Start[^1],9:0.0} {f.RssAtHealthz[^1],11:0.0} {f.RssIdle[^1],9:0.0} {f.RssAfterLifecycles[^1],9:0.0} {f.Recovery[^1],10:0.0}");
            }
        }

        Console.WriteLine($"medians (min–max), RSS in MiB; load average {File.ReadAllText("/proc/loadavg").Trim()}");
        foreach (var variant in variants)
        {
            var f = figures[variant];
            Console.WriteLine($"{variant.Name,-24} start {Spread(f.Start)} ms  rss@healthz {Spread(f.RssAtHealthz)}  idle {Spread(f.RssIdle)}  after {lifecycles} {Spread(f.RssAfterLifecycles)}  recover {records} {Spread(f.Recovery)} ms");
        }

        Console.WriteLine(failures == 0 ? "no failures" : $"{failures} runs FAILED");
        return failures == 0 ? 0 : 1;
    }

    private static string Spread(List<double> values) => values.Count == 0 ? "-" : $"{Stats.Median(values):0.0} ({values.Min():0.0}–{values.Max():0.0})";

    private static async Task RoundAsync(Variant variant, Figures figures, int lifecycles, int records, CancellationToken cancellationToken)
    {
        var work = WorkFolder.Create();
        try
        {
            var (config, socket, _, _) = await SshdWorkbench.WriteConfigAsync(work, "[28200,28399]", cancellationToken);
            using var client = FalkHttp.CreateClient(socket, TimeSpan.FromMinutes(2));

            // First start in a fresh state directory, then the lifecycles on that daemon.
            var (daemon, elapsed) = await StartAsync(variant, config, client, cancellationToken);
            await using (daemon)
            {
                figures.Start.Add(elapsed);
                figures.RssAtHealthz.Add(ProcessFigures.RssMiB(daemon.Pid));
                await Task.Delay(TimeSpan.FromSeconds(2), cancellationToken);
                figures.RssIdle.Add(ProcessFigures.RssMiB(daemon.Pid));
                for (var i = 0; i < lifecycles; i++)
                {
                    if (!await SoakBenchmark.LifecycleAsync(client, cancellationToken))
                    {
                        throw new InvalidOperationException("a lifecycle failed");
                    }
                }

                await Task.Delay(TimeSpan.FromSeconds(2), cancellationToken);
                figures.RssAfterLifecycles.Add(ProcessFigures.RssMiB(daemon.Pid));
                await daemon.StopAsync(TimeSpan.FromSeconds(30), cancellationToken);
            }

            // Records of machines that are gone, written while no daemon runs; the next start cleans them up.
            WriteGoneRecords(config, records);
            (daemon, elapsed) = await StartAsync(variant, config, client, cancellationToken);
            await using (daemon)
            {
                figures.Recovery.Add(elapsed);
                var left = await client.GetFromJsonAsync<List<object>>("v1/machines", cancellationToken);
                await daemon.StopAsync(TimeSpan.FromSeconds(30), cancellationToken);
                using var store = new MachineStore(ConfigLoader.Load(config, BackendModules.Descriptors));
                if (left is not { Count: 0 } || store.All().Count != 0)
                {
                    throw new InvalidOperationException($"recovery left machines: {left?.Count} listed, {store.All().Count} recorded");
                }
            }
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    private static async Task<(Falk.Core.Processes.RunningProcess Daemon, double Milliseconds)> StartAsync(Variant variant, string config, HttpClient client, CancellationToken cancellationToken)
    {
        var watch = Stopwatch.StartNew();
        var daemon = await LocalFalkd.StartAsync(config, client, null, cancellationToken, variant.Environment, TimeSpan.FromMilliseconds(2), variant.Executable);
        return (daemon, watch.Elapsed.TotalMilliseconds);
    }

    private static void WriteGoneRecords(string configPath, int count)
    {
        var config = ConfigLoader.Load(configPath, BackendModules.Descriptors);
        using var store = new MachineStore(config);
        var now = DateTimeOffset.UtcNow;
        for (var i = 0; i < count; i++)
        {
            var id = $"gone{i:D4}";
            var workDirectory = Path.Combine(config.Daemon.StateDirectory, "machines", id);
            Directory.CreateDirectory(workDirectory);
            store.Save(new MachineRecord(id, "custom", "sshd", Manage: false, OwnerUid: 0, Port: 28200 + i, new Dictionary<string, string>(),
                now, now.AddHours(1), "running", LastError: null, workDirectory, Handle: null, IdempotencyKey: null, ObservedHostKey: null));
        }
    }
}
