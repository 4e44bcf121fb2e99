using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using Docker.DotNet;
using Docker.DotNet.Models;
using Falk.Client;
using Falk.Core.Processes;
using Falk.Core.Ssh;
using Falk.Core.Waiting;
using Falk.Tests.Fixtures;
using Version = System.Version;

namespace Falk.Benchmarks;

/// <summary>
/// A CI job's machine, interleaved run by run: through Falk (create → boot?wait=ssh with the host key verified →
/// <c>ssh … true</c> → delete, answered with the container, its port and its record gone) against podman's API driven
/// here directly, the fastest honest way (create, start, an SSH key exchange every 10 ms until it shows the image's
/// host key, <c>ssh … true</c>, forced removal). Same image, same podman service, same ssh command. Prints medians,
/// quartiles and ratios for "ready" and for the whole lifecycle.
/// </summary>
public static class CompareBenchmark
{
    private const string Image = PodmanBenchmark.TestImage;
    private const string InstanceLabel = "org.falk.instance";
    private const int WarmUp = 2;

    /// <summary>Pause between two direct key-exchange attempts: short, so the direct path loses next to nothing to polling.</summary>
    private static readonly TimeSpan DirectPollInterval = TimeSpan.FromMilliseconds(10);

    public static async Task<int> RunAsync(string[] args, CancellationToken cancellationToken)
    {
        var runs = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 10;
        var hostKey = await PodmanBenchmark.BuildImageAsync(cancellationToken);
        var imageDirectory = Path.Combine(Environment.GetEnvironmentVariable("FALK_IMAGE_DIR") ?? "/var/cache/falk-test-images", "podman");
        var clientKey = Path.Combine(imageDirectory, "id_ed25519");

        var work = WorkFolder.Create();
        var instance = "falk-bench-" + Guid.NewGuid().ToString("N")[..8];
        var podmanSocket = Path.Combine(work, "podman.sock");
        var service = await PodmanBenchmark.StartServiceAsync(podmanSocket, cancellationToken);
        try
        {
            using var docker = new DockerClientBuilder().WithEndpoint(new Uri("unix://" + podmanSocket)).WithApiVersion(new Version(1, 41)).Build();
            var imageId = (await docker.Images.InspectImageAsync(Image, cancellationToken)).ID;
            var (socket, config) = await PodmanBenchmark.WriteFalkConfigAsync(work, instance, podmanSocket, cancellationToken);

            using var client = FalkHttp.CreateClient(socket, TimeSpan.FromMinutes(2));
            var daemon = await LocalFalkd.StartAsync(config, client, null, cancellationToken);
            await using (daemon)
            {
                var job = new SshJob(new ProcessRunner(), clientKey, work);
                var falk = new List<Lifecycle>();
                var direct = new List<Lifecycle>();
                for (var i = 0; i < runs + WarmUp; i++)
                {
                    var viaFalk = await ThroughFalkAsync(client, docker, job, instance, cancellationToken);
                    var byApi = await DirectAsync(docker, job, imageId, hostKey, instance, 27900 + (i % 50), cancellationToken);
                    if (i >= WarmUp)
                    {
                        falk.Add(viaFalk);
                        direct.Add(byApi);
                    }
                }

                Console.WriteLine($"falk-bench compare {runs}: podman {(await docker.System.GetVersionAsync(cancellationToken)).Version}, image {Image}, "
                    + $"{runs} interleaved runs after {WarmUp} warm-up runs, {Environment.ProcessorCount} cores, load average at the end {ProcessFigures.LoadAverage()}");
                Console.WriteLine(OtherProviders());
                Print("Falk", falk);
                Print("direct API", direct);
                Console.WriteLine($"{"ratio of medians, ready (Falk / direct)",-44} {Stats.Median(Ready(falk)) / Stats.Median(Ready(direct)):0.00}");
                Console.WriteLine($"{"ratio of medians, lifecycle (Falk / direct)",-44} {Stats.Median(Whole(falk)) / Stats.Median(Whole(direct)):0.00}");
                Console.WriteLine($"{"runs where Falk was ready first",-44} {falk.Zip(direct).Count(p => p.First.Ready <= p.Second.Ready)} of {runs}");
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

    /// <summary>One lifecycle's phases (ms from its start): made, ready (host key verified), job's ssh done, gone.</summary>
    private sealed record Lifecycle(double Created, double Ready, double Job, double Gone);

    private static List<double> Ready(List<Lifecycle> runs) => runs.Select(r => r.Ready).ToList();

    private static List<double> Whole(List<Lifecycle> runs) => runs.Select(r => r.Gone).ToList();

    private static void Print(string path, List<Lifecycle> runs)
    {
        Console.WriteLine(Stats.DescribeSpread($"{path}: ready", Ready(runs)));
        Console.WriteLine(Stats.DescribeSpread($"{path}: lifecycle", Whole(runs)));
        Console.WriteLine($"  {path,-11} median phases: create {Stats.Median(runs.Select(r => r.Created).ToList()),6:0.0} ms"
            + $"  boot to key {Stats.Median(runs.Select(r => r.Ready - r.Created).ToList()),6:0.0} ms"
            + $"  ssh true {Stats.Median(runs.Select(r => r.Job - r.Ready).ToList()),6:0.0} ms"
            + $"  delete {Stats.Median(runs.Select(r => r.Gone - r.Job).ToList()),6:0.0} ms");
    }

    private static async Task<Lifecycle> ThroughFalkAsync(HttpClient client, DockerClient docker, SshJob job, string instance, CancellationToken cancellationToken)
    {
        var watch = Stopwatch.StartNew();
        using var created = await client.PostAsJsonAsync("v1/machines", new { template = "sshd" }, cancellationToken);
        await created.EnsureSuccessAsync(cancellationToken);
        var id = JsonNode.Parse(await created.Content.ReadAsStringAsync(cancellationToken))!["id"]!.GetValue<string>();
        var made = watch.Elapsed.TotalMilliseconds;
        using var booted = await client.PostAsync($"v1/machines/{id}/boot?wait=ssh&timeout=60", null, cancellationToken);
        await booted.EnsureSuccessAsync(cancellationToken);
        var ready = watch.Elapsed.TotalMilliseconds;
        var ssh = JsonNode.Parse(await booted.Content.ReadAsStringAsync(cancellationToken))!["ssh"]!;
        if (ssh["known_host_key_verified"]?.GetValue<bool>() != true)
        {
            throw new InvalidOperationException($"machine {id} was called ready without a verified host key: {ssh.ToJsonString()}");
        }

        var port = ssh["port"]!.GetValue<int>();
        await job.RunTrueAsync(ssh["host"]!.GetValue<string>(), port, ssh["user"]!.GetValue<string>(), ssh["known_hosts_line"]!.GetValue<string>(), cancellationToken);
        var jobDone = watch.Elapsed.TotalMilliseconds;
        using var deleted = await client.DeleteAsync($"v1/machines/{id}", cancellationToken);
        await deleted.EnsureSuccessAsync(cancellationToken);
        var gone = watch.Elapsed.TotalMilliseconds;

        // Not timed: the delete's answer must mean the record, the container and the port are gone.
        using var after = await client.GetAsync($"v1/machines/{id}", cancellationToken);
        var left = await docker.Containers.ListContainersAsync(new ContainersListParameters
        {
            All = true,
            Filters = new Dictionary<string, IDictionary<string, bool>> { ["label"] = new Dictionary<string, bool> { [$"{InstanceLabel}={instance}"] = true } },
        }, cancellationToken);
        if (after.StatusCode != HttpStatusCode.NotFound || left.Any(c => c.Labels.TryGetValue(InstanceLabel, out var v) && v == instance) || !PortIsFree(port))
        {
            throw new InvalidOperationException($"DELETE of {id} answered before everything was gone: GET {(int)after.StatusCode}, {left.Count} containers, port {port} free: {PortIsFree(port)}");
        }

        return new Lifecycle(made, ready, jobDone, gone);
    }

    private static async Task<Lifecycle> DirectAsync(DockerClient docker, SshJob job, string imageId, HostKey key, string instance, int port, CancellationToken cancellationToken)
    {
        var watch = Stopwatch.StartNew();
        var created = await docker.Containers.CreateContainerAsync(new CreateContainerParameters
        {
            Name = "bench-" + Guid.NewGuid().ToString("N")[..11],
            Image = imageId,
            Labels = new Dictionary<string, string> { [InstanceLabel] = instance + "-direct" },
            ExposedPorts = new Dictionary<string, EmptyStruct> { ["22/tcp"] = default },
            HostConfig = new HostConfig
            {
                PortBindings = new Dictionary<string, IList<PortBinding>>
                {
                    ["22/tcp"] = [new PortBinding { HostIP = "127.0.0.1", HostPort = port.ToString(CultureInfo.InvariantCulture) }],
                },
            },
        }, cancellationToken);
        var made = watch.Elapsed.TotalMilliseconds;
        await docker.Containers.StartContainerAsync(created.ID, new ContainerStartParameters(), cancellationToken);
        var probe = new SshNetProbe();
        var endpoint = new SshEndpoint("127.0.0.1", port, "chantal");
        await Wait.UntilAsync(async ct =>
        {
            var result = await probe.ProbeAsync(endpoint, [key], TimeSpan.FromSeconds(1.5), ct);
            return result.KeyMismatch ? throw new InvalidOperationException(result.Error)
                : result.Ready ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>(result.Error ?? "not ready");
        }, DirectPollInterval, TimeSpan.FromSeconds(60), $"SSH on {endpoint}", cancellationToken);
        var ready = watch.Elapsed.TotalMilliseconds;
        await job.RunTrueAsync("127.0.0.1", port, "chantal", key.KnownHostsLine("127.0.0.1", port), cancellationToken);
        var jobDone = watch.Elapsed.TotalMilliseconds;
        await docker.Containers.RemoveContainerAsync(created.ID, new ContainerRemoveParameters { Force = true }, cancellationToken);
        return new Lifecycle(made, ready, jobDone, watch.Elapsed.TotalMilliseconds);
    }

    private static bool PortIsFree(int port)
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            listener.Bind(new IPEndPoint(IPAddress.Loopback, port));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    /// <summary>Other providers of such machines that could be compared here. The original Python falk is looked for on PATH.</summary>
    private static string OtherProviders()
    {
        var found = (Environment.GetEnvironmentVariable("PATH") ?? string.Empty).Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Select(dir => Path.Combine(dir, "falk"))
            .Where(File.Exists)
            .Where(path => File.ReadLines(path).FirstOrDefault()?.Contains("python", StringComparison.Ordinal) == true)
            .ToList();
        return found.Count == 0
            ? "other providers: none installed (no Python falk on PATH); Falk is compared with the direct podman API only"
            : $"other providers: a Python falk at {string.Join(", ", found)} is installed but this benchmark does not drive it; compare by hand";
    }

    /// <summary>The job's own <c>ssh … true</c>, strict about the host key it was given.</summary>
    private sealed class SshJob(ProcessRunner runner, string clientKey, string work)
    {
        public async Task RunTrueAsync(string host, int port, string user, string knownHostsLine, CancellationToken cancellationToken)
        {
            var knownHosts = Path.Combine(work, "known_hosts");
            await File.WriteAllTextAsync(knownHosts, knownHostsLine + "\n", cancellationToken);
            await runner.RunAsync(new ProcessSpec(["ssh", "-q", "-i", clientKey, "-p", port.ToString(CultureInfo.InvariantCulture),
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + knownHosts, "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "IdentitiesOnly=yes", "-o", "ControlMaster=no", $"{user}@{host}", "true"]), TimeSpan.FromSeconds(30), cancellationToken);
        }
    }
}
