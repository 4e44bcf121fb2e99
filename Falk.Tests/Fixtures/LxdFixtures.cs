using System.Net.Sockets;
using System.Text.Json.Nodes;
using Falk.Core.Processes;
using Falk.Core.Ssh;
using Falk.Core.Waiting;

namespace Falk.Tests.Fixtures;

/// <summary>The <c>lxc</c> CLI, for setting the host up, inspecting and cleaning up in tests (never used by Falk).</summary>
public static class LxdCli
{
    public const string SocketPath = "/var/lib/lxd/unix.socket";

    public static async Task<string> RunAsync(IReadOnlyList<string> args, CancellationToken cancellationToken) =>
        (await new ProcessRunner().RunAsync(new ProcessSpec(["lxc", .. args]), TimeSpan.FromMinutes(2), cancellationToken)).StdoutTail.Trim();

    /// <summary>A GET of LXD's API on its socket: the answer's metadata.</summary>
    public static async Task<JsonNode> QueryAsync(string path, CancellationToken cancellationToken)
    {
        using var client = UnixHttp.CreateClient(SocketPath);
        using var response = await client.GetAsync(path, cancellationToken);
        var body = await response.JsonAsync(cancellationToken);
        response.EnsureSuccessStatusCode();
        return body["metadata"]!;
    }

    /// <summary>Name → status of every instance marked as made by the daemon <paramref name="instance"/>.</summary>
    public static async Task<IReadOnlyDictionary<string, string>> InstancesAsync(string instance, CancellationToken cancellationToken) =>
        (await QueryAsync("/1.0/instances?recursion=1", cancellationToken)).AsArray()
            .Where(i => i!["config"]?["user.falk.instance"]?.GetValue<string>() == instance)
            .ToDictionary(i => i!["name"]!.GetValue<string>(), i => i!["status"]!.GetValue<string>());

    /// <summary>Fingerprints of the images (template versions) published by the daemon <paramref name="instance"/>.</summary>
    public static async Task<IReadOnlyList<string>> ImagesAsync(string instance, CancellationToken cancellationToken) =>
        (await QueryAsync("/1.0/images?recursion=1", cancellationToken)).AsArray()
            .Where(i => i!["properties"]?["falk.instance"]?.GetValue<string>() == instance)
            .Select(i => i!["fingerprint"]!.GetValue<string>())
            .ToList();

    /// <summary>Deletes every instance and image of a daemon instance.</summary>
    public static async Task RemoveInstanceAsync(string instance, CancellationToken cancellationToken)
    {
        foreach (var name in (await InstancesAsync(instance, cancellationToken)).Keys)
        {
            try
            {
                await RunAsync(["delete", "--force", name], cancellationToken);
            }
            catch (ProcessFailedException)
            {
                // Deleted meanwhile (the daemon's own shutdown may still have been at it); anything left fails below.
            }
        }

        await Wait.UntilAsync(async ct => (await InstancesAsync(instance, ct)) is { Count: > 0 } left
                ? ProbeOutcome.NotYet<bool>(string.Join(", ", left.Keys)) : ProbeOutcome.Done(true),
            TimeSpan.FromMilliseconds(200), TimeSpan.FromSeconds(30), "every instance of the test's daemon deleted", cancellationToken);
        foreach (var fingerprint in await ImagesAsync(instance, cancellationToken))
        {
            await RunAsync(["image", "delete", fingerprint], cancellationToken);
        }
    }
}

/// <summary>
/// The host's LXD: started (<c>lxd --group root</c>, detached like a system service, left running) when it does not
/// answer, with a <c>dir</c> storage pool and a root disk in the default profile, and the test image of
/// images/lxd/build-image.sh imported. Nothing is installed here (scripts/install-deps.sh does that).
/// </summary>
public sealed class LxdHost : IAsyncLifetime
{
    public const string User = "chantal";

    public string ImageAlias { get; private set; } = null!;

    /// <summary>chantal's private key.</summary>
    public string ClientKeyPath { get; private set; } = null!;

    /// <summary>The host key baked into the image.</summary>
    public HostKey HostKey { get; private set; } = null!;

    public async ValueTask InitializeAsync()
    {
        var ct = TestContext.Current.CancellationToken;
        if (!await AnswersAsync(ct))
        {
            await StartAsync(ct);
        }

        if ((await LxdCli.QueryAsync("/1.0/storage-pools", ct)).AsArray().All(p => p!.GetValue<string>() != "/1.0/storage-pools/default"))
        {
            await LxdCli.RunAsync(["storage", "create", "default", "dir"], ct);
        }

        if ((await LxdCli.QueryAsync("/1.0/profiles/default", ct))["devices"]?["root"] is null)
        {
            await LxdCli.RunAsync(["profile", "device", "add", "default", "root", "disk", "path=/", "pool=default"], ct);
        }

        var script = Path.Combine(RepositoryPaths.Root, "images", "lxd", "build-image.sh");
        await new ProcessRunner().RunAsync(new ProcessSpec([script]), TimeSpan.FromMinutes(15), ct);
        var directory = Path.Combine(Environment.GetEnvironmentVariable("FALK_IMAGE_DIR") ?? "/var/cache/falk-test-images", "lxd");
        ImageAlias = Environment.GetEnvironmentVariable("FALK_LXD_IMAGE") ?? "falk-test-sshd";
        ClientKeyPath = Path.Combine(directory, "id_ed25519");
        HostKey = HostKey.TryParse(await File.ReadAllTextAsync(Path.Combine(directory, "ssh_host_ed25519_key.pub"), ct), out _)!;
    }

    /// <summary>
    /// Starts <c>lxd --group root</c> in the background (its output to /dev/null) and waits until its API answers. A pid
    /// file of its own, since the <c>lxd forkproxy</c> helpers of running containers are /usr/bin/lxd too.
    /// </summary>
    public static async Task StartAsync(CancellationToken cancellationToken)
    {
        await new ProcessRunner().RunAsync(new ProcessSpec(["start-stop-daemon", "--start", "--background",
            "--pidfile", "/run/lxd-falk-tests.pid", "--make-pidfile", "--startas", "/usr/bin/lxd", "--", "--group", "root"]),
            TimeSpan.FromSeconds(30), cancellationToken);
        await Wait.UntilAsync(async ct => await AnswersAsync(ct) ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>("the LXD socket does not answer"),
            TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(60), "LXD answering", cancellationToken);
    }

    /// <summary>Ends the LXD daemon (SIGTERM to the pid its API reports): its containers keep running, its API is gone.</summary>
    public static async Task StopAsync(CancellationToken cancellationToken)
    {
        var pid = (await LxdCli.QueryAsync("/1.0", cancellationToken))["environment"]!["server_pid"]!.GetValue<int>();
        using var process = System.Diagnostics.Process.GetProcessById(pid);
        process.Kill(entireProcessTree: false);
        await process.WaitForExitAsync(cancellationToken);
    }

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;

    private static async Task<bool> AnswersAsync(CancellationToken cancellationToken)
    {
        try
        {
            return (await LxdCli.QueryAsync("/1.0", cancellationToken))["environment"]?["server_pid"] is not null;
        }
        catch (HttpRequestException)
        {
            return false;
        }
    }
}

[CollectionDefinition(Name)]
public sealed class LxdTests : ICollectionFixture<LxdHost>
{
    /// <summary>The LXD test classes share one daemon (and one stops it): they run one after another.</summary>
    public const string Name = "LXD";
}

/// <summary>A falkd with the template <c>sshd</c> (the LXD test image, no pinned key) and a state folder of its own; disposal stops it and deletes what carries its instance id.</summary>
public sealed class LxdDaemon : IAsyncDisposable
{
    private LxdDaemon(FalkDaemon daemon, string instance)
    {
        Daemon = daemon;
        Instance = instance;
    }

    public FalkDaemon Daemon { get; }

    public HttpClient Client => Daemon.Client;

    /// <summary>The daemon's instance id: the <c>user.falk.instance</c> of what it makes.</summary>
    public string Instance { get; }

    public static async Task<LxdDaemon> StartAsync(LxdHost host, CancellationToken cancellationToken, string templates = "", int ports = 10, string onShutdown = "destroy", string daemonExtra = "")
    {
        var daemon = await FalkDaemon.StartAsync($"""
            [sshd]
            type = lxd
            base_image = {host.ImageAlias}
            ssh_user = {LxdHost.User}
            ssh_host = 127.0.0.1

            {templates}
            """, cancellationToken, daemonExtra: $"lxd_socket = {LxdCli.SocketPath}\n{daemonExtra}", ports: ports, onShutdown: onShutdown);
        var instance = new Falk.Core.Config.DaemonOptions { StateDirectory = daemon.Directory.File("state") }.InstanceId;
        return new LxdDaemon(daemon, instance);
    }

    public Task<IReadOnlyDictionary<string, string>> InstancesAsync(CancellationToken ct) => LxdCli.InstancesAsync(Instance, ct);

    public async ValueTask DisposeAsync()
    {
        await Daemon.DisposeAsync();
        await LxdCli.RemoveInstanceAsync(Instance, CancellationToken.None);
    }
}
