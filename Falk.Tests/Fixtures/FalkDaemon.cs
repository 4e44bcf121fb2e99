using System.Collections.Concurrent;
using Falk.Core.Processes;

namespace Falk.Tests.Fixtures;

/// <summary>
/// The real falkd, started as a process on a config in a temporary folder and reached over its Unix socket.
/// Disposal stops it (SIGTERM, then SIGKILL) and removes the folder.
/// </summary>
public sealed class FalkDaemon : IAsyncDisposable
{
    private readonly ConcurrentQueue<string> _output = new();

    private FalkDaemon(TempDirectory directory, string configPath, string socketPath, (int First, int Last) ports)
    {
        Directory = directory;
        ConfigPath = configPath;
        SocketPath = socketPath;
        Ports = ports;
        Client = UnixHttp.CreateClient(socketPath);
    }

    public TempDirectory Directory { get; }

    public string ConfigPath { get; }

    public string SocketPath { get; }

    public HttpClient Client { get; }

    /// <summary>The daemon's <c>vm_ports</c>, both ends included.</summary>
    public (int First, int Last) Ports { get; }

    /// <summary>The daemon's instance id (a hash of its <c>state_dir</c>): the <c>FALK_INSTANCE</c> and <c>org.falk.instance</c> mark of what it makes.</summary>
    public string Instance => new Falk.Core.Config.DaemonOptions { StateDirectory = Directory.File("state") }.InstanceId;

    public RunningProcess? Process { get; private set; }

    public string Output => string.Join('\n', _output);

    /// <summary>The falkd program built next to the tests.</summary>
    public static string Executable => LocalFalkd.Executable;

    /// <summary>
    /// Writes a config whose [falk] section points at a socket in a new temporary folder and a fresh port range,
    /// followed by <paramref name="templates"/> (INI text), then starts falkd and waits until it answers.
    /// <paramref name="name"/> is the daemon's instance name (what labels its containers).
    /// </summary>
    /// <remarks>
    /// Unless <paramref name="onShutdown"/> says otherwise, machines are destroyed when the daemon stops, so no test leaks
    /// them; with <paramref name="defaults"/> the config leaves out everything that has a default but the socket, the
    /// ports and the state folder.
    /// </remarks>
    public static async Task<FalkDaemon> StartAsync(string templates, CancellationToken cancellationToken, string daemonExtra = "", int ports = 10, string name = "falk-test", string onShutdown = "destroy", bool defaults = false)
    {
        var directory = new TempDirectory();
        var socket = directory.File("falk.sock");
        var (first, last) = TestPorts.NextRange(ports);
        var config = directory.File("falk.conf");
        var chosen = defaults ? string.Empty : $"""
            name = {name}
            control_socket_permissions = 770
            on_shutdown = {onShutdown}
            """;
        await File.WriteAllTextAsync(config, $"""
            [falk]
            control_socket = {socket}
            vm_ports = [{first},{last}]
            state_dir = {directory.File("state")}
            {chosen}
            {daemonExtra}

            {templates}
            """, cancellationToken);

        var daemon = new FalkDaemon(directory, config, socket, (first, last));
        await daemon.StartProcessAsync(cancellationToken);
        return daemon;
    }

    /// <summary>Runs falkd with the given arguments to completion (config checks, failing starts).</summary>
    public static async Task<(int ExitCode, string Stdout, string Stderr)> RunToEndAsync(IReadOnlyList<string> args, CancellationToken cancellationToken)
    {
        var process = RunningProcess.Start(new ProcessSpec([Executable, .. args]));
        await using (process)
        {
            var code = await process.WaitForExitAsync(cancellationToken).WaitAsync(TimeSpan.FromSeconds(30), cancellationToken);
            await process.WaitForOutputAsync(cancellationToken);
            return (code, process.Stdout.Tail(200), process.Stderr.Tail(200));
        }
    }

    public async Task StartProcessAsync(CancellationToken cancellationToken) =>
        Process = await LocalFalkd.StartAsync(ConfigPath, Client, _output.Enqueue, cancellationToken);

    /// <summary>SIGTERM, as systemd stops it; returns the exit code.</summary>
    public async Task<int> StopAsync(CancellationToken cancellationToken)
    {
        if (Process is null)
        {
            return 0;
        }

        await Process.StopAsync(TimeSpan.FromSeconds(20), cancellationToken);
        return await Process.Exited;
    }

    /// <summary>SIGTERM (or, with <paramref name="kill"/>, SIGKILL) to falkd alone, as systemd's KillMode=process does: its machines are left to it.</summary>
    public async Task<int> SignalDaemonOnlyAsync(bool kill, CancellationToken cancellationToken)
    {
        if (kill)
        {
            Falk.Core.Unix.ProcessTree.Kill(Process!.Pid);
        }
        else
        {
            Falk.Core.Unix.ProcessTree.Terminate(Process!.Pid);
        }

        return await Process.Exited.WaitAsync(TimeSpan.FromSeconds(30), cancellationToken);
    }

    public async ValueTask DisposeAsync()
    {
        if (Process is not null)
        {
            await Process.StopAsync(TimeSpan.FromSeconds(20), CancellationToken.None);
            await Process.DisposeAsync();
        }

        Client.Dispose();
        Directory.Dispose();
    }
}
