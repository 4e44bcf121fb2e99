using System.Globalization;
using Falk.Client;
using Falk.Core.Processes;
using Falk.Tests.Fixtures;

namespace Falk.Benchmarks;

/// <summary>
/// The same machine lifecycle (create → boot?wait=ssh → delete) through one falkd on an LXD template and on a podman
/// template, interleaved: LXD's ready time (boot until SSH answers with the image's host key) and whole lifecycle
/// beside podman's. Uses the host's LXD (<c>/var/lib/lxd/unix.socket</c>, set up as the README says) and a podman API
/// service of the benchmark's own.
/// </summary>
public static class LxdBenchmark
{
    public static async Task<int> RunAsync(string[] args, CancellationToken cancellationToken)
    {
        var runs = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 10;
        var root = PodmanBenchmark.RepositoryRoot();
        var runner = new ProcessRunner();
        await runner.RunAsync(new ProcessSpec([Path.Combine(root, "images", "podman", "build-image.sh")]), TimeSpan.FromMinutes(10), cancellationToken);
        await runner.RunAsync(new ProcessSpec([Path.Combine(root, "images", "lxd", "build-image.sh")]), TimeSpan.FromMinutes(15), cancellationToken);

        var work = WorkFolder.Create();
        var podmanSocket = Path.Combine(work, "podman.sock");
        var service = await PodmanBenchmark.StartServiceAsync(podmanSocket, cancellationToken);
        try
        {
            var socket = Path.Combine(work, "falk.sock");
            var config = Path.Combine(work, "falk.conf");
            await File.WriteAllTextAsync(config, $"""
                [falk]
                control_socket = {socket}
                state_dir = {Path.Combine(work, "state")}
                vm_ports = [27800,27899]
                on_shutdown = destroy
                podman_socket = unix://{podmanSocket}
                [lxd]
                type = lxd
                base_image = falk-test-sshd
                ssh_user = chantal
                ssh_host = 127.0.0.1
                [podman]
                type = podman
                base_image = localhost/falk-test-sshd:latest
                ssh_user = chantal
                ssh_host = 127.0.0.1
                """, cancellationToken);

            using var client = FalkHttp.CreateClient(socket, TimeSpan.FromMinutes(2));
            var daemon = await LocalFalkd.StartAsync(config, client, null, cancellationToken);
            await using (daemon)
            {
                var totals = new Dictionary<string, List<double>> { ["lxd"] = [], ["podman"] = [] };
                for (var i = 0; i < runs + 2; i++)
                {
                    foreach (var template in totals.Keys)
                    {
                        var took = await PodmanBenchmark.ThroughFalkAsync(client, cancellationToken, template, "bench-" + template);
                        if (i >= 2)
                        {
                            // The first two runs warm up the JIT, the connections and the engines' caches.
                            totals[template].Add(took);
                        }
                    }
                }

                Console.WriteLine($"LXD beside podman through Falk (test images of images/lxd and images/podman), {runs} interleaved runs after 2 warm-up runs");
                foreach (var (template, took) in totals)
                {
                    var phases = PodmanBenchmark.Phases.Where(p => p.Path == "bench-" + template).Skip(2).ToList();
                    Console.WriteLine(Stats.Describe($"{template}: create+boot?wait=ssh+delete", took));
                    Console.WriteLine($"  {template,-8} median create {Stats.Median(phases.Select(p => p.Create).ToList()),6:0.0} ms  ready (boot to SSH) {Stats.Median(phases.Select(p => p.Boot).ToList()),7:0.0} ms  delete {Stats.Median(phases.Select(p => p.Delete).ToList()),6:0.0} ms");
                }
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
}
