using System.Net.Sockets;
using System.Text.Json;
using Falk.Core.Backends.Qemu.Qmp;
using Falk.Core.Machines;
using Falk.Core.Processes;
using Falk.Core.Unix;
using Falk.Core.Waiting;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Backends.Qemu;

/// <summary>
/// One QEMU machine: its overlay, its QEMU process (a session of its own) and the QMP connection to it. Stopping asks
/// the guest to power down (repeatedly: an ACPI event sent before the guest listens is lost), then quits QEMU over QMP,
/// then kills it. Snapshots live inside the overlay: <c>savevm</c>/<c>loadvm</c> with memory while QEMU runs,
/// <c>qemu-img snapshot</c> of the disk while it does not.
/// </summary>
internal sealed class QemuMachine(
    MachineSpec spec,
    QemuTemplateOptions options,
    string overlay,
    string backing,
    QemuImageVersions versions,
    QemuImg qemuImg,
    IProcessRunner runner,
    ILogger logger,
    QemuConfinement confinement,
    QemuResumeStates? resumes = null) : IMachineInstance, ISnapshotSupport, ICommitSupport, IPauseReporting, ILaunchReporting, IProcessOwnership
{
    /// <summary>How long QEMU gets to open its QMP socket after it starts.</summary>
    private static readonly TimeSpan QmpConnectTimeout = TimeSpan.FromSeconds(30);

    /// <summary>How often the power button is pressed again while the guest has not reacted.</summary>
    private static readonly TimeSpan PowerdownRetryInterval = TimeSpan.FromSeconds(1.5);

    /// <summary>How long QEMU gets to exit after <c>quit</c>, or after the guest shut down, before it is killed.</summary>
    private static readonly TimeSpan QuitTimeout = TimeSpan.FromSeconds(5);

    /// <summary>How long a QEMU taken back after a restart gets to answer on its QMP socket.</summary>
    private static readonly TimeSpan QmpReattachTimeout = TimeSpan.FromSeconds(15);

    private readonly QemuMachinePaths _paths = new(spec.WorkDirectory, spec.ConsoleLogPath);
    private readonly QemuSnapshots _snapshots = new(spec.MachineId, overlay, qemuImg, logger);
    private readonly QemuResumeLaunch? _resume = resumes is null ? null : new(spec, overlay, backing, versions, qemuImg, resumes, logger);
    private QemuProcess? _process;
    private QemuMonitor? _monitor;
    private QemuConsole? _console;
    private Task? _eventPump;
    private string? _lastShutdownReason;
    private bool _cleanedUp;
    private volatile bool _paused;
    private bool _launched;
    private string? _layer;

    public string Overlay => overlay;

    public Task<MachineExit>? Exited { get; private set; }

    /// <summary>Paused by someone else on a monitor of QEMU's (status <c>paused</c>), not by a snapshot or a shutdown.</summary>
    public bool IsPaused => _paused;

    public event EventHandler<bool>? PausedChanged;

    public string? Handle => JsonSerializer.Serialize(_process?.Launch is { } launch
        ? new QemuHandle(launch.ProcessGroup, launch.LeaderStartTime, overlay, backing, _layer, launch.ProcessGroup, launch.Session, launch.BootId)
        : new QemuHandle(_process?.Pid, _process?.StartTime, overlay, backing, _layer));

    public LaunchNote? LastLaunch { get; private set; }

    /// <summary>
    /// A machine taken back after a restart: <paramref name="launched"/> when it ran before (its disk is no longer the
    /// one a saved guest expects), and the saved guest's layer its overlay sits on, if it was resumed.
    /// </summary>
    public void TakeBack(bool launched, string? layer)
    {
        _launched = launched;
        _layer = layer;
    }

    /// <summary>The SSH port is QEMU's own (a user network's <c>hostfwd</c>): only the running QEMU may listen there.</summary>
    public bool OwnsProcess(int pid) => _process is { HasExited: false } process && process.Pid == pid;

    public bool ServesOwnSshPort => true;

    public IEnumerable<int> ListenerCandidates => _process is { HasExited: false } process ? [process.Pid] : [];

    /// <summary>
    /// Pauses between looks for QEMU's sockets: 1 ms at first, growing to 20 ms. QEMU holds the guest until its console
    /// is connected, so every millisecond between the socket appearing and the connection is a millisecond of boot.
    /// </summary>
    private static TimeSpan SocketPollPause(TimeSpan waited) =>
        TimeSpan.FromTicks(Math.Clamp(waited.Ticks / 10, TimeSpan.TicksPerMillisecond, 20 * TimeSpan.TicksPerMillisecond));

    /// <summary>The monitor of the QEMU running the machine; null when none runs.</summary>
    private QemuMonitor? RunningMonitor => _process is { HasExited: false } ? _monitor : null;

    public async Task LaunchAsync(CancellationToken cancellationToken)
    {
        LastLaunch = null;
        var fresh = !_launched;
        _launched = true;

        // Only a disk nobody wrote to yet is the disk a saved guest expects: a machine booted before boots cold again.
        if (fresh && _resume is not null)
        {
            (LastLaunch, _layer) = await _resume.TryAsync(StartQemuAsync, KillQemuAsync, cancellationToken).ConfigureAwait(false);
            if (_layer is not null)
            {
                return;
            }
        }

        await StartQemuAsync(incoming: null, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Saves the running guest to <paramref name="path"/> and quits QEMU (a machine that makes a template's saved guest).</summary>
    public async Task<long> SaveGuestAsync(string path, CancellationToken cancellationToken)
    {
        var process = _process ?? throw new BackendOperationException($"machine {spec.MachineId} is not running");
        var monitor = RunningMonitor ?? throw new BackendOperationException($"machine {spec.MachineId} is not running");
        var size = await QemuGuestTransfer.SaveAsync(monitor, path, spec.MachineId, cancellationToken).ConfigureAwait(false);
        await QuitOrKillAsync(process, cancellationToken).ConfigureAwait(false);
        return size;
    }

    private Task KillQemuAsync() => _process?.KillAsync(CancellationToken.None) ?? Task.CompletedTask;

    private async Task StartQemuAsync(string? incoming, CancellationToken cancellationToken)
    {
        await DisconnectAsync().ConfigureAwait(false);
        if (_process is not null)
        {
            await _process.DisposeAsync().ConfigureAwait(false);
            _process = null;
        }

        _paused = false;
        confinement.Prepare(_paths, overlay);
        File.Delete(_paths.QmpSocket);
        File.Delete(_paths.ConsoleSocket);
        File.Delete(_paths.PidFile);
        _lastShutdownReason = null;

        var command = confinement.Wrap(QemuCommandLine.Build(options, spec.MachineId, overlay, spec.SshPort, _paths, incoming is not null));
        var processSpec = new ProcessSpec(command)
        {
            OwnProcessGroup = true,
            OnOutputLine = line => QemuLog.Output(logger, spec.MachineId, line),
            Environment = ProcessMarks.Environment(spec.MachineId, spec.InstanceId),
        };
        var process = new LaunchedQemu(runner.Start(processSpec));
        _process = process;
        QemuLog.Launched(logger, spec.MachineId, process.Pid, processSpec.ToString());
        QemuConsole? console = null;
        Exited = DescribeExitAsync(process, () => console);

        try
        {
            // QEMU waits for its console to be connected before it goes on: nothing the guest prints is missed.
            console = await Wait.UntilAsync(
                ct => TryConnectAsync(process, _paths.ConsoleSocket, ConnectConsoleAsync, ct),
                SocketPollPause,
                QmpConnectTimeout,
                $"console socket {_paths.ConsoleSocket} of machine {spec.MachineId}",
                cancellationToken,
                process.Exited).ConfigureAwait(false);
            _console = console;
            _monitor = await Wait.UntilAsync(
                ct => TryConnectAsync(process, _paths.QmpSocket, ConnectQmpAsync, ct),
                SocketPollPause,
                QmpConnectTimeout,
                $"QMP socket {_paths.QmpSocket} of machine {spec.MachineId}",
                cancellationToken,
                process.Exited).ConfigureAwait(false);
        }
        catch (WaitTimeoutException e)
        {
            // Not "still booting": without QMP the machine cannot be controlled. The service kills it.
            throw new BackendOperationException($"QEMU of machine {spec.MachineId} did not open its console and QMP sockets: {e.Message}", e);
        }

        QemuLog.QmpConnected(logger, spec.MachineId, _paths.QmpSocket);
        _eventPump = PumpEventsAsync(_monitor, process);
        if (incoming is not null)
        {
            await QemuGuestTransfer.LoadAsync(_monitor, incoming, process.Exited, spec.MachineId, cancellationToken).ConfigureAwait(false);
            return;
        }

        // A command with -S starts the guest paused (status "prelaunch"): a machine Falk boots is meant to run.
        var status = (await _monitor.ExecuteAsync("query-status", cancellationToken).ConfigureAwait(false))?["status"]?.GetValue<string>();
        if (status is "prelaunch" or "paused")
        {
            await _monitor.ExecuteAsync("cont", cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Takes back a QEMU an earlier daemon started: it must be the very process recorded (pid and start time, this boot)
    /// and answer on its QMP socket. Returns false, leaving the machine not running, when it does not.
    /// </summary>
    public async Task<bool> AdoptAsync(SessionMark launch, CancellationToken cancellationToken)
    {
        var (pid, startTime) = (launch.ProcessGroup, launch.LeaderStartTime);
        if (!launch.LeaderHoldsIds || !ProcessTree.IsSameLiveProcess(pid, startTime))
        {
            return false;
        }

        QmpClient qmp;
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(QmpReattachTimeout);
            qmp = await QmpClient.ConnectAsync(_paths.QmpSocket, timeout.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is SocketException or QmpConnectionException
            || (e is OperationCanceledException && !cancellationToken.IsCancellationRequested))
        {
            QemuLog.ReattachFailed(logger, spec.MachineId, pid, e.Message);
            return false;
        }

        var process = new AdoptedQemu(launch);
        _process = process;
        var monitor = new QemuMonitor(qmp, spec.MachineId);
        _monitor = monitor;
        try
        {
            _console = await ConnectConsoleAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (SocketException e)
        {
            // The machine runs on; only its console is not recorded from here on.
            QemuLog.ConsoleNotConnected(logger, spec.MachineId, _paths.ConsoleSocket, e.Message);
        }

        var console = _console;
        Exited = DescribeExitAsync(process, () => console);
        _paused = await monitor.IsPausedAsync(cancellationToken).ConfigureAwait(false);
        _eventPump = PumpEventsAsync(monitor, process);
        QemuLog.Reattached(logger, spec.MachineId, pid, _paths.QmpSocket);
        return true;
    }

    public async Task StopAsync(TimeSpan grace, CancellationToken cancellationToken)
    {
        var process = _process;
        if (process is null || process.HasExited)
        {
            return;
        }

        QemuLog.PoweringDown(logger, spec.MachineId, grace.TotalSeconds);
        try
        {
            await Wait.UntilAsync(
                async ct =>
                {
                    if (process.HasExited)
                    {
                        return ProbeOutcome.Done(true);
                    }

                    await TryMonitorAsync("system_powerdown", ct).ConfigureAwait(false);
                    return ProbeOutcome.NotYet<bool>("the guest has not powered off");
                },
                PowerdownRetryInterval,
                grace,
                $"power-off of machine {spec.MachineId}",
                cancellationToken,
                process.Exited).ConfigureAwait(false);
            return;
        }
        catch (WaitTimeoutException)
        {
            QemuLog.PowerdownTimedOut(logger, spec.MachineId, "quitting QEMU");
        }

        await QuitOrKillAsync(process, cancellationToken).ConfigureAwait(false);
    }

    public async Task KillAsync(CancellationToken cancellationToken)
    {
        if (_process is not null)
        {
            await _process.KillAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    public async Task CleanupAsync(CancellationToken cancellationToken)
    {
        await DisconnectAsync().ConfigureAwait(false);
        if (_process is not null)
        {
            await _process.DisposeAsync().ConfigureAwait(false);
            _process = null;
        }

        File.Delete(overlay);
        if (Directory.Exists(_paths.QemuDirectory))
        {
            Directory.Delete(_paths.QemuDirectory, recursive: true);
        }

        if (!_cleanedUp)
        {
            _cleanedUp = true;
            if (_layer is not null)
            {
                versions.Release(_layer);
            }

            versions.Release(backing);
        }
    }

    /// <summary>The end of the serial console, then what QEMU itself wrote (errors about its options, disks).</summary>
    public string OutputTail()
    {
        var console = QemuExitReport.ConsoleTail(spec.ConsoleLogPath);
        var qemu = _process?.OutputTail(10) ?? string.Empty;
        return string.IsNullOrEmpty(qemu) ? console : string.IsNullOrEmpty(console) ? qemu : console + "\n" + qemu;
    }

    public Task CopyConsoleAsync(Stream destination, bool follow, CancellationToken cancellationToken) =>
        ConsoleLog.CopyAsync(spec.ConsoleLogPath, destination, follow, Exited, cancellationToken);

    public Task<SnapshotInfo> CreateSnapshotAsync(string name, CancellationToken cancellationToken) =>
        _snapshots.CreateAsync(name, RunningMonitor, cancellationToken);

    public Task<IReadOnlyList<SnapshotInfo>> ListSnapshotsAsync(CancellationToken cancellationToken) =>
        _snapshots.ListAsync(RunningMonitor, cancellationToken);

    public Task RestoreSnapshotAsync(string name, CancellationToken cancellationToken) =>
        _snapshots.RestoreAsync(name, RunningMonitor, cancellationToken);

    public Task DeleteSnapshotAsync(string name, CancellationToken cancellationToken) =>
        _snapshots.DeleteAsync(name, RunningMonitor, cancellationToken);

    public async Task<CommitResult> CommitAsync(CancellationToken cancellationToken)
    {
        if (_process is { HasExited: false })
        {
            // The service stops a machine before it commits it; a QEMU still running here is this backend's failure.
            throw new BackendOperationException($"QEMU of machine {spec.MachineId} still runs: it must be off to commit its disk");
        }

        var version = await versions.CommitAsync(overlay, spec.MachineId, cancellationToken).ConfigureAwait(false);
        return new CommitResult(version);
    }

    private Task<QemuConsole> ConnectConsoleAsync(CancellationToken cancellationToken) =>
        QemuConsole.ConnectAsync(_paths.ConsoleSocket, spec.ConsoleLogPath, spec.ConsoleMaxBytes, cancellationToken);

    private async Task<QemuMonitor> ConnectQmpAsync(CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(QmpConnectTimeout);
        return new QemuMonitor(await QmpClient.ConnectAsync(_paths.QmpSocket, timeout.Token).ConfigureAwait(false), spec.MachineId);
    }

    /// <summary>Connects to one of the sockets QEMU serves, once it is there; a QEMU that ended fails the machine.</summary>
    private async Task<ProbeOutcome<T>> TryConnectAsync<T>(QemuProcess process, string socket, Func<CancellationToken, Task<T>> connect, CancellationToken cancellationToken)
    {
        if (process.HasExited)
        {
            var exit = await Exited!.ConfigureAwait(false);
            throw new MachineFailedException(spec.MachineId, $"QEMU of machine {spec.MachineId} ended at start: {exit.Description}", exit.ExitCode, exit.OutputTail);
        }

        if (!File.Exists(socket))
        {
            return ProbeOutcome.NotYet<T>($"no socket {socket} yet");
        }

        try
        {
            return ProbeOutcome.Done(await connect(cancellationToken).ConfigureAwait(false));
        }
        catch (SocketException e)
        {
            return ProbeOutcome.NotYet<T>(e.Message);
        }
        catch (QmpConnectionException e)
        {
            // QEMU closed the socket while greeting: most likely it is exiting, which the next look reports.
            return ProbeOutcome.NotYet<T>(e.Message);
        }
        catch (OperationCanceledException e) when (!cancellationToken.IsCancellationRequested)
        {
            throw new BackendOperationException($"QEMU of machine {spec.MachineId} accepted on {_paths.QmpSocket} but sent no QMP greeting within {QmpConnectTimeout.TotalSeconds:0} s", e);
        }
    }

    /// <summary>Logs events, and quits a QEMU that stays up after its guest shut down (a command with <c>-no-shutdown</c>).</summary>
    private async Task PumpEventsAsync(QemuMonitor monitor, QemuProcess process)
    {
        await foreach (var qmpEvent in monitor.Events.ReadAllAsync().ConfigureAwait(false))
        {
            QemuLog.QmpEvent(logger, spec.MachineId, qmpEvent.Name, qmpEvent.Data?.ToJsonString() ?? string.Empty);
            if (qmpEvent.Name == QmpEvent.Shutdown)
            {
                _lastShutdownReason = qmpEvent.Reason;
                _ = QuitIfLingeringAsync(monitor, process, qmpEvent.Reason ?? "unknown reason");
            }
            else if (qmpEvent.Name == QmpEvent.Stop)
            {
                // QEMU stops the guest itself for savevm/loadvm and on shutdown; only status "paused" is a pause from
                // outside. Asked here, in event order, so a RESUME that follows is handled after this answer.
                SetPaused(await monitor.IsPausedAsync(CancellationToken.None).ConfigureAwait(false));
            }
            else if (qmpEvent.Name == QmpEvent.Resume)
            {
                SetPaused(false);
            }
        }
    }

    private void SetPaused(bool paused)
    {
        if (_paused != paused)
        {
            _paused = paused;
            QemuLog.PauseChanged(logger, spec.MachineId, paused ? "paused from outside Falk" : "running again");
            PausedChanged?.Invoke(this, paused);
        }
    }

    private async Task QuitIfLingeringAsync(QemuMonitor monitor, QemuProcess process, string reason)
    {
        try
        {
            await process.Exited.WaitAsync(QuitTimeout).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            if (ReferenceEquals(_monitor, monitor) && !process.HasExited)
            {
                QemuLog.QuitAfterShutdown(logger, spec.MachineId, reason);
                await TryMonitorAsync("quit", CancellationToken.None).ConfigureAwait(false);
            }
        }
    }

    private async Task QuitOrKillAsync(QemuProcess process, CancellationToken cancellationToken)
    {
        await TryMonitorAsync("quit", cancellationToken).ConfigureAwait(false);
        try
        {
            await process.Exited.WaitAsync(QuitTimeout, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            QemuLog.PowerdownTimedOut(logger, spec.MachineId, "QEMU ignored quit; killing it");
            await process.KillAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>A command that may fail because QEMU is on its way out; nothing to do without a monitor.</summary>
    private Task TryMonitorAsync(string command, CancellationToken cancellationToken) =>
        _monitor is { } monitor ? monitor.TryExecuteAsync(command, cancellationToken) : Task.CompletedTask;

    private async Task DisconnectAsync()
    {
        if (_console is not null)
        {
            await _console.DisposeAsync().ConfigureAwait(false);
            _console = null;
        }

        if (_monitor is not null)
        {
            await _monitor.DisposeAsync().ConfigureAwait(false);
            _monitor = null;
        }

        if (_eventPump is not null)
        {
            await _eventPump.ConfigureAwait(false);
            _eventPump = null;
        }
    }

    /// <param name="launchConsole">The console of this QEMU, once connected.</param>
    private async Task<MachineExit> DescribeExitAsync(QemuProcess process, Func<QemuConsole?> launchConsole)
    {
        var code = await process.Exited.ConfigureAwait(false);
        var console = launchConsole();
        await process.WaitForOutputAsync(TimeSpan.FromSeconds(1)).ConfigureAwait(false);
        if (console is not null)
        {
            // The guest's last words are read up to the console's end before the exit is described.
            await Task.WhenAny(console.Completed, Task.Delay(TimeSpan.FromSeconds(1))).ConfigureAwait(false);
        }

        // Only an exit that does not say "failed" by itself needs the console's panic line.
        var panic = code is null or 0 ? console?.Panic : null;
        var exit = QemuExitReport.Describe(code, _lastShutdownReason, panic, OutputTail());
        QemuLog.Exited(logger, spec.MachineId, exit.Description);
        return exit;
    }
}
