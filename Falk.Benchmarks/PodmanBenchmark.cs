using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using Docker.DotNet;
using Docker.DotNet.Models;
using Falk.Client;
using Falk.Core.Processes;
using Falk.Core.Ssh;
using Falk.Core.Waiting;
using Version = System.Version;
using Falk.Tests.Fixtures;

namespace Falk.Benchmarks;

/// <summary>
/// create → boot?wait=ssh → delete of a podman machine (the test image's sshd) through Falk, against the same
/// container lifecycle driven directly on podman's API (create, start, the same SSH probe, forced removal): what
/// Falk itself adds. Both talk to one <c>podman system service</c> of the benchmark's own on a temporary socket.
/// </summary>
public static class PodmanBenchmark
{
    private const string InstanceLabel = "org.falk.instance";

    public static async Task<int> RunAsync(string[] args, CancellationToken cancellationToken)
    {
        var runs = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 20;
        var hostKey = await BuildImageAsync(cancellationToken);
        const string image = TestImage;

        var work = WorkFolder.Create();
        var instance = "falk-bench-" + Guid.NewGuid().ToString("N")[..8];
        var podmanSocket = Path.Combine(work, "podman.sock");
        var service = await StartServiceAsync(podmanSocket, cancellationToken);
        try
        {
            using var docker = new DockerClientBuilder().WithEndpoint(new Uri("unix://" + podmanSocket)).WithApiVersion(new Version(1, 41)).Build();
            var imageId = (await docker.Images.InspectImageAsync(image, cancellationToken)).ID;

            var (socket, config) = await PodmanBenchmark.WriteFalkConfigAsync(work, instance, podmanSocket, cancellationToken);

            using var client = FalkHttp.CreateClient(socket, TimeSpan.FromMinutes(2));
            var daemon = await LocalFalkd.StartAsync(config, client, null, cancellationToken);
            await using (daemon)
            {
                var readiness = new SshReadiness(new SshNetProbe(), TimeProvider.System);
                var viaFalk = new List<double>();
                var direct = new List<double>();
                for (var i = 0; i < runs + 2; i++)
                {
                    var falk = await ThroughFalkAsync(client, cancellationToken);
                    var api = await DirectAsync(docker, readiness, imageId, hostKey, instance, 27900 + (i % 50), cancellationToken);
                    if (i >= 2)
                    {
                        // The first two runs warm up the JIT, the connections and podman's caches on both sides.
                        viaFalk.Add(falk);
                        direct.Add(api);
                    }
                }

                Console.WriteLine($"podman backend ({image}, podman {await PodmanVersionAsync(docker, cancellationToken)}), {runs} interleaved runs after 2 warm-up runs");
                Console.WriteLine(Stats.Describe("through Falk: create+boot?wait=ssh+delete", viaFalk));
                Console.WriteLine(Stats.Describe("direct API: create+start+probe+rm -f", direct));
                foreach (var path in new[] { "falk", "direct" })
                {
                    var phases = Phases.Where(p => p.Path == path).Skip(2).ToList();
                    Console.WriteLine($"  {path,-8} median create {Stats.Median(phases.Select(p => p.Create).ToList()),6:0.0} ms  boot {Stats.Median(phases.Select(p => p.Boot).ToList()),6:0.0} ms  delete {Stats.Median(phases.Select(p => p.Delete).ToList()),6:0.0} ms");
                }

                Console.WriteLine($"{"ratio of medians (Falk / direct API)",-40} {Stats.Median(viaFalk) / Stats.Median(direct):0.00}");
                Console.WriteLine($"{"Falk's overhead (difference of medians)",-40} {Stats.Median(viaFalk) - Stats.Median(direct):0.0} ms");
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

    /// <summary>create → boot?wait=ssh → delete of one machine of <paramref name="template"/>; its phases go to <see cref="Phases"/> under <paramref name="path"/>.</summary>
    internal static async Task<double> ThroughFalkAsync(HttpClient client, CancellationToken cancellationToken, string template = "sshd", string path = "falk")
    {
        var watch = Stopwatch.StartNew();
        using var created = await client.PostAsJsonAsync("v1/machines", new { template }, cancellationToken);
        await created.EnsureSuccessAsync(cancellationToken);
        var id = JsonNode.Parse(await created.Content.ReadAsStringAsync(cancellationToken))!["id"]!.GetValue<string>();
        var create = watch.Elapsed.TotalMilliseconds;
        using var booted = await client.PostAsync($"v1/machines/{id}/boot?wait=ssh&timeout=60", null, cancellationToken);
        await booted.EnsureSuccessAsync(cancellationToken);
        var boot = watch.Elapsed.TotalMilliseconds;
        using var deleted = await client.DeleteAsync($"v1/machines/{id}", cancellationToken);
        await deleted.EnsureSuccessAsync(cancellationToken);
        Phases.Add((path, create, boot - create, watch.Elapsed.TotalMilliseconds - boot));
        return watch.Elapsed.TotalMilliseconds;
    }

    internal static readonly List<(string Path, double Create, double Boot, double Delete)> Phases = [];

    /// <summary>What Falk does for a machine, done by hand: the same container parameters, the same SSH probe.</summary>
    private static async Task<double> DirectAsync(DockerClient docker, SshReadiness readiness, string imageId, HostKey key, string instance, int port, CancellationToken cancellationToken)
    {
        var watch = Stopwatch.StartNew();
        var created = await docker.Containers.CreateContainerAsync(new CreateContainerParameters
        {
            Name = "bench-" + Guid.NewGuid().ToString("N")[..11],
            Image = imageId,
            Labels = new Dictionary<string, string> { [InstanceLabel] = instance },
            ExposedPorts = new Dictionary<string, EmptyStruct> { ["22/tcp"] = default },
            HostConfig = new HostConfig
            {
                PortBindings = new Dictionary<string, IList<PortBinding>>
                {
                    ["22/tcp"] = [new PortBinding { HostIP = "127.0.0.1", HostPort = port.ToString(CultureInfo.InvariantCulture) }],
                },
            },
        }, cancellationToken);
        var create = watch.Elapsed.TotalMilliseconds;
        await docker.Containers.StartContainerAsync(created.ID, new ContainerStartParameters(), cancellationToken);
        await readiness.WaitAsync(new SshEndpoint("127.0.0.1", port, "chantal"), [key], TimeSpan.FromSeconds(60),
            null, () => { }, cancellationToken);
        var boot = watch.Elapsed.TotalMilliseconds;
        await docker.Containers.RemoveContainerAsync(created.ID, new ContainerRemoveParameters { Force = true }, cancellationToken);
        Phases.Add(("direct", create, boot - create, watch.Elapsed.TotalMilliseconds - boot));
        return watch.Elapsed.TotalMilliseconds;
    }

    internal const string TestImage = "localhost/falk-test-sshd:latest";

    /// <summary>A falk.conf in <paramref name="work"/> with one podman template <c>sshd</c> on the test image; returns its socket and path.</summary>
    internal static async Task<(string Socket, string Config)> WriteFalkConfigAsync(string work, string instance, string podmanSocket, CancellationToken cancellationToken)
    {
        var socket = Path.Combine(work, "falk.sock");
        var config = Path.Combine(work, "falk.conf");
        await File.WriteAllTextAsync(config, $"""
            [falk]
            name = {instance}
            control_socket = {socket}
            state_dir = {Path.Combine(work, "state")}
            vm_ports = [27800,27899]
            podman_socket = unix://{podmanSocket}
            [sshd]
            type = podman
            base_image = {TestImage}
            ssh_user = chantal
            ssh_host = 127.0.0.1
            """, cancellationToken);
        return (socket, config);
    }

    /// <summary>Builds (or finds cached) the test image; returns the host key baked into it.</summary>
    internal static async Task<HostKey> BuildImageAsync(CancellationToken cancellationToken)
    {
        await new ProcessRunner().RunAsync(new ProcessSpec([Path.Combine(RepositoryRoot(), "images", "podman", "build-image.sh")]), TimeSpan.FromMinutes(10), cancellationToken);
        var imageDirectory = Path.Combine(Environment.GetEnvironmentVariable("FALK_IMAGE_DIR") ?? "/var/cache/falk-test-images", "podman");
        return HostKey.TryParse(await File.ReadAllTextAsync(Path.Combine(imageDirectory, "ssh_host_ed25519_key.pub"), cancellationToken), out _)!;
    }

    /// <summary><c>podman system service</c> of the benchmark's own on <paramref name="podmanSocket"/>, with the tests' containers.conf, answering.</summary>
    internal static async Task<RunningProcess> StartServiceAsync(string podmanSocket, CancellationToken cancellationToken)
    {
        var service = new ProcessRunner().Start(new ProcessSpec(["podman", "system", "service", "--time=0", "unix://" + podmanSocket])
        {
            Environment = new Dictionary<string, string?> { ["CONTAINERS_CONF"] = Path.Combine(RepositoryRoot(), "images", "podman", "containers.conf") },
            OwnProcessGroup = true,
        });
        try
        {
            await WaitForSocketAsync(podmanSocket, cancellationToken);
            return service;
        }
        catch
        {
            await service.DisposeAsync();
            throw;
        }
    }

    private static async Task<string> PodmanVersionAsync(DockerClient docker, CancellationToken cancellationToken) =>
        (await docker.System.GetVersionAsync(cancellationToken)).Version;

    internal static async Task WaitForSocketAsync(string path, CancellationToken cancellationToken) =>
        await Wait.UntilAsync(async ct =>
        {
            using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), ct);
                return ProbeOutcome.Done(true);
            }
            catch (SocketException e)
            {
                return ProbeOutcome.NotYet<bool>(e.Message);
            }
        }, TimeSpan.FromMilliseconds(50), TimeSpan.FromSeconds(30), "podman system service answering", cancellationToken);

    internal static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Falk.slnx")))
            {
                return dir.FullName;
            }
        }

        throw new DirectoryNotFoundException("Falk.slnx not found above " + AppContext.BaseDirectory);
    }
}
