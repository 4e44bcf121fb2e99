using Falk.Benchmarks;

// Benchmarks print figures; they are run on demand, never as timed tests.
//   dotnet run -c Release --project Falk.Benchmarks -- <name> [options]
var benchmarks = new Dictionary<string, Func<string[], CancellationToken, Task<int>>>(StringComparer.Ordinal)
{
    ["custom"] = CustomBenchmark.RunAsync,
    ["soak"] = SoakBenchmark.RunAsync,
    ["podman"] = PodmanBenchmark.RunAsync,
    ["compare"] = CompareBenchmark.RunAsync,
    ["qemu"] = QemuBenchmark.RunAsync,
    ["protocol"] = ProtocolBenchmark.RunAsync,
    ["lxd"] = LxdBenchmark.RunAsync,
    ["startup"] = StartupBenchmark.RunAsync,
    ["pool"] = PoolBenchmark.RunAsync,
};

if (args.Length == 0 || !benchmarks.TryGetValue(args[0], out var run))
{
    await Console.Error.WriteLineAsync($"usage: falk-bench {{{string.Join('|', benchmarks.Keys)}}} [options]");
    return 2;
}

using var cancel = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true;
    cancel.Cancel();
};
return await run(args[1..], cancel.Token);
