using System.Net.Sockets;
using Falk.Core.Processes;
using Falk.Core.Ssh;
using Falk.Core.Waiting;

namespace Falk.Tests.Fixtures;

/// <summary>The podman CLI with the tests' own containers.conf, for building, inspecting and cleaning up (never used by Falk).</summary>
public static class PodmanCli
{
    public static string ContainersConf => Path.Combine(RepositoryPaths.Root, "images", "podman", "containers.conf");

    public static IReadOnlyDictionary<string, string?> Environment => new Dictionary<string, string?> { ["CONTAINERS_CONF"] = ContainersConf };

    /// <summary>Runs podman with <paramref name="args"/>; returns its stdout lines.</summary>
    public static async Task<IReadOnlyList<string>> RunAsync(IReadOnlyList<string> args, CancellationToken cancellationToken)
    {
        var result = await new ProcessRunner().RunAsync(new ProcessSpec(["podman", .. args]) { Environment = Environment }, TimeSpan.FromMinutes(2), cancellationToken);
        return result.StdoutTail.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
    }

    /// <summary>Ids of every container (running or not) carrying <paramref name="label"/> (<c>key=value</c>).</summary>
    public static Task<IReadOnlyList<string>> ContainersAsync(string label, CancellationToken cancellationToken) =>
        RunAsync(["ps", "-a", "-q", "--no-trunc", "--filter", $"label={label}"], cancellationToken);

    public static Task<IReadOnlyList<string>> ImagesAsync(string label, CancellationToken cancellationToken) =>
        RunAsync(["images", "-a", "-q", "--no-trunc", "--filter", $"label={label}"], cancellationToken);

    /// <summary>Removes every container and image of a daemon instance (by its <c>org.falk.instance</c> label).</summary>
    public static async Task RemoveInstanceAsync(string instance, CancellationToken cancellationToken)
    {
        var label = $"org.falk.instance={instance}";
        var containers = await ContainersAsync(label, cancellationToken);
        if (containers.Count > 0)
        {
            await RunAsync(["rm", "-f", .. containers], cancellationToken);
        }

        // Snapshots and versions can be layered on each other: retry until none is left.
        for (var round = 0; round < 5; round++)
        {
            var images = await ImagesAsync(label, cancellationToken);
            if (images.Count == 0)
            {
                return;
            }

            try
            {
                await RunAsync(["rmi", "-f", .. images.Distinct()], cancellationToken);
            }
            catch (ProcessFailedException)
            {
                // Some were children of others; the next round gets them.
            }
        }
    }
}

/// <summary>The test image made by images/podman/build-image.sh (cached), and the keys that go with it.</summary>
public sealed class PodmanTestImage
{
    private static readonly SemaphoreSlim Gate = new(1, 1);
    private static PodmanTestImage? _built;

    private PodmanTestImage(string reference, string clientKeyPath, HostKey hostKey)
    {
        Reference = reference;
        ClientKeyPath = clientKeyPath;
        HostKey = hostKey;
    }

    public const string User = "chantal";

    public string Reference { get; }

    /// <summary>chantal's private key.</summary>
    public string ClientKeyPath { get; }

    /// <summary>The host key baked into the image.</summary>
    public HostKey HostKey { get; }

    public static async Task<PodmanTestImage> GetAsync(CancellationToken cancellationToken)
    {
        await Gate.WaitAsync(cancellationToken);
        try
        {
            if (_built is null)
            {
                var script = Path.Combine(RepositoryPaths.Root, "images", "podman", "build-image.sh");
                await new ProcessRunner().RunAsync(new ProcessSpec([script]), TimeSpan.FromMinutes(10), cancellationToken);
                var directory = Path.Combine(System.Environment.GetEnvironmentVariable("FALK_IMAGE_DIR") ?? "/var/cache/falk-test-images", "podman");
                var hostKey = HostKey.TryParse(await File.ReadAllTextAsync(Path.Combine(directory, "ssh_host_ed25519_key.pub"), cancellationToken), out _)!;
                _built = new PodmanTestImage(
                    System.Environment.GetEnvironmentVariable("FALK_TEST_IMAGE") ?? "localhost/falk-test-sshd:latest",
                    Path.Combine(directory, "id_ed25519"),
                    hostKey);
            }

            return _built;
        }
        finally
        {
            Gate.Release();
        }
    }
}

/// <summary><c>podman system service</c> on a socket of the tests' own, with the tests' containers.conf. Disposal stops it.</summary>
public sealed class PodmanService : IAsyncDisposable
{
    private readonly IReadOnlyDictionary<string, string?> _environment;
    private RunningProcess? _process;

    private PodmanService(string socketPath, IReadOnlyDictionary<string, string?> environment)
    {
        SocketPath = socketPath;
        _environment = environment;
    }

    public string SocketPath { get; }

    /// <summary>The <c>podman_socket</c> value for falk.conf.</summary>
    public string Uri => "unix://" + SocketPath;

    public bool IsRunning => _process is { HasExited: false };

    /// <param name="path">The service's <c>PATH</c> (what podman and the tools it runs, such as netavark, find); null for the tests' own.</param>
    public static async Task<PodmanService> StartAsync(string socketPath, CancellationToken cancellationToken, string? path = null)
    {
        var environment = new Dictionary<string, string?>(PodmanCli.Environment);
        if (path is not null)
        {
            environment["PATH"] = path;
        }

        var service = new PodmanService(socketPath, environment);
        await service.RestartAsync(cancellationToken);
        return service;
    }

    /// <summary>Starts the service (again) and waits until its socket accepts connections.</summary>
    public async Task RestartAsync(CancellationToken cancellationToken)
    {
        await StopAsync();
        File.Delete(SocketPath);
        var process = RunningProcess.Start(new ProcessSpec(["podman", "system", "service", "--time=0", Uri])
        {
            Environment = _environment,
            OwnProcessGroup = true,
        });
        _process = process;
        await Wait.UntilAsync(async ct =>
        {
            if (process.HasExited)
            {
                throw new InvalidOperationException($"podman system service exited: {process.OutputTail()}");
            }

            using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                await socket.ConnectAsync(new UnixDomainSocketEndPoint(SocketPath), ct);
                return ProbeOutcome.Done(true);
            }
            catch (SocketException e)
            {
                return ProbeOutcome.NotYet<bool>(e.Message);
            }
        }, TimeSpan.FromMilliseconds(50), TimeSpan.FromSeconds(30), "podman system service answering", cancellationToken);
    }

    /// <summary>Stops the service (SIGTERM, then SIGKILL); containers keep running under their conmon.</summary>
    public async Task StopAsync()
    {
        if (_process is null)
        {
            return;
        }

        await _process.StopAsync(TimeSpan.FromSeconds(10), CancellationToken.None);
        await _process.DisposeAsync();
        _process = null;
    }

    public async ValueTask DisposeAsync() => await StopAsync();
}

/// <summary>
/// A test class's podman: the test image and one API service on a temporary socket. Each test gets a falkd of its own
/// (<see cref="StartDaemonAsync"/>) with a unique instance name; disposing that removes whatever carries the name.
/// </summary>
public sealed class PodmanFixture : IAsyncLifetime
{
    private TempDirectory? _directory;

    public PodmanTestImage Image { get; private set; } = null!;

    public PodmanService Service { get; private set; } = null!;

    public async ValueTask InitializeAsync()
    {
        var ct = TestContext.Current.CancellationToken;
        Image = await PodmanTestImage.GetAsync(ct);
        _directory = new TempDirectory();
        Service = await PodmanService.StartAsync(_directory.File("podman.sock"), ct);
    }

    /// <summary>
    /// A falkd on this fixture's podman with the template <c>sshd</c> (the test image, no pinned key) and
    /// <paramref name="templates"/>; <paramref name="service"/> replaces the fixture's API service.
    /// </summary>
    public Task<PodmanDaemon> StartDaemonAsync(CancellationToken cancellationToken, string templates = "", int ports = 10, PodmanService? service = null, string onShutdown = "destroy", string daemonExtra = "") =>
        PodmanDaemon.StartAsync(service ?? Service, Image, templates, ports, onShutdown, cancellationToken, daemonExtra);

    public async ValueTask DisposeAsync()
    {
        if (Service is not null)
        {
            await Service.DisposeAsync();
        }

        _directory?.Dispose();
    }
}

/// <summary>A falkd with podman templates and a state folder of its own (so a unique instance id); disposal stops it and removes everything labelled with that id.</summary>
public sealed class PodmanDaemon : IAsyncDisposable
{
    private PodmanDaemon(FalkDaemon daemon, string instance)
    {
        Daemon = daemon;
        Instance = instance;
    }

    public FalkDaemon Daemon { get; }

    public HttpClient Client => Daemon.Client;

    /// <summary>The daemon's instance id (a hash of its <c>state_dir</c>): the <c>org.falk.instance</c> label of what it makes.</summary>
    public string Instance { get; }

    public string InstanceLabel => $"org.falk.instance={Instance}";

    public static async Task<PodmanDaemon> StartAsync(PodmanService service, PodmanTestImage image, string templates, int ports, string onShutdown, CancellationToken cancellationToken, string daemonExtra = "")
    {
        var daemon = await FalkDaemon.StartAsync($"""
            [sshd]
            type = podman
            base_image = {image.Reference}
            ssh_user = {PodmanTestImage.User}
            ssh_host = 127.0.0.1

            {templates}
            """, cancellationToken, daemonExtra: $"podman_socket = {service.Uri}\n{daemonExtra}", ports: ports, onShutdown: onShutdown);
        return new PodmanDaemon(daemon, daemon.Instance);
    }

    public async ValueTask DisposeAsync()
    {
        await Daemon.DisposeAsync();
        await PodmanCli.RemoveInstanceAsync(Instance, CancellationToken.None);
    }
}
