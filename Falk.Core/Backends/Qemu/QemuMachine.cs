using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
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
    ILogger logger) : IMachineInstance, ISnapshotSupport, ICommitSupport, IPauseReporting
{
    /// <summary>How long QEMU gets to open its QMP socket after it starts.</summary>
    private static readonly TimeSpan QmpConnectTimeout = TimeSpan.FromSeconds(30);

    /// <summary>How often the power button is pressed again while the guest has not reacted.</summary>
    private static readonly TimeSpan PowerdownRetryInterval = TimeSpan.FromSeconds(1.5);

    /// <summary>How long QEMU gets to exit after <c>quit</c>, or after the guest shut down, before it is killed.</summary>
    private static readonly TimeSpan QuitTimeout = TimeSpan.FromSeconds(5);

    private const string PanicMarker = "Kernel panic";

    /// <summary>How long a QEMU taken back after a restart gets to answer on its QMP socket.</summary>
    private static readonly TimeSpan QmpReattachTimeout = TimeSpan.FromSeconds(15);

    private readonly QemuMachinePaths _paths = new(spec.WorkDirectory, spec.ConsoleLogPath);
    private QemuProcess? _process;
    private QmpClient? _qmp;
    private Task? _eventPump;
    private string? _lastShutdownReason;
    private long _consoleStart;
    private bool _cleanedUp;
    private volatile bool _paused;

    public string Overlay => overlay;

    public Task<MachineExit>? Exited { get; private set; }

    /// <summary>Paused by someone else on a monitor of QEMU's (status <c>paused</c>), not by a snapshot or a shutdown.</summary>
    public bool IsPaused => _paused;

    public event EventHandler<bool>? PausedChanged;

    public string? Handle => JsonSerializer.Serialize(new QemuHandle(_process?.Pid, _process?.StartTime, overlay, backing));

    private bool IsRunning => _process is { HasExited: false } && _qmp is not null;

    public async Task LaunchAsync(CancellationToken cancellationToken)
    {
        await DisconnectAsync().ConfigureAwait(false);
        if (_process is not null)
        {
            await _process.DisposeAsync().ConfigureAwait(false);
            _process = null;
        }

        _paused = false;
        File.Delete(_paths.QmpSocket);
        File.Delete(_paths.PidFile);
        _lastShutdownReason = null;
        _consoleStart = File.Exists(spec.ConsoleLogPath) ? new FileInfo(spec.ConsoleLogPath).Length : 0;

        var command = QemuCommandLine.Build(options, spec.MachineId, overlay, spec.SshPort, _paths);
        var processSpec = new ProcessSpec(command)
        {
            OwnProcessGroup = true,
            OnOutputLine = line => QemuLog.Output(logger, spec.MachineId, line),
            Environment = ProcessMarks.Environment(spec.MachineId, spec.InstanceId),
        };
        var process = new LaunchedQemu(runner.Start(processSpec));
        _process = process;
        QemuLog.Launched(logger, spec.MachineId, process.Pid, processSpec.ToString());
        Exited = DescribeExitAsync(process);

        try
        {
            _qmp = await Wait.UntilAsync(
                ct => TryConnectAsync(process, ct),
                TimeSpan.FromMilliseconds(20),
                QmpConnectTimeout,
                $"QMP socket {_paths.QmpSocket} of machine {spec.MachineId}",
                cancellationToken,
                process.Exited).ConfigureAwait(false);
        }
        catch (WaitTimeoutException e)
        {
            // Not "still booting": without QMP the machine cannot be controlled. The service kills it.
            throw new BackendOperationException($"QEMU of machine {spec.MachineId} did not open its QMP socket: {e.Message}", e);
        }

        QemuLog.QmpConnected(logger, spec.MachineId, _paths.QmpSocket);
        _eventPump = PumpEventsAsync(_qmp, process);

        // A command with -S starts the guest paused (status "prelaunch"): a machine Falk boots is meant to run.
        var status = (await ExecuteAsync("query-status", cancellationToken).ConfigureAwait(false))?["status"]?.GetValue<string>();
        if (status is "prelaunch" or "paused")
        {
            await ExecuteAsync("cont", cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Takes back a QEMU an earlier daemon started: it must be the very process recorded (pid and start time) and
    /// answer on its QMP socket. Returns false, leaving the machine not running, when it does not.
    /// </summary>
    public async Task<bool> AdoptAsync(int pid, long startTime, CancellationToken cancellationToken)
    {
        if (!ProcessTree.IsSameLiveProcess(pid, startTime))
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

        var process = new AdoptedQemu(pid, startTime);
        _process = process;
        _qmp = qmp;
        _consoleStart = File.Exists(spec.ConsoleLogPath) ? new FileInfo(spec.ConsoleLogPath).Length : 0;
        Exited = DescribeExitAsync(process);
        _paused = await IsPausedAsync(qmp, cancellationToken).ConfigureAwait(false);
        _eventPump = PumpEventsAsync(qmp, process);
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

                    await TryExecuteAsync("system_powerdown", ct).ConfigureAwait(false);
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
        File.Delete(_paths.QmpSocket);
        File.Delete(_paths.PidFile);
        if (!_cleanedUp)
        {
            _cleanedUp = true;
            versions.Release(backing);
        }
    }

    /// <summary>The end of the serial console, then what QEMU itself wrote (errors about its options, disks).</summary>
    public string OutputTail()
    {
        var console = ConsoleTail();
        var qemu = _process?.OutputTail(10) ?? string.Empty;
        return string.IsNullOrEmpty(qemu) ? console : string.IsNullOrEmpty(console) ? qemu : console + "\n" + qemu;
    }

    public Task CopyConsoleAsync(Stream destination, bool follow, CancellationToken cancellationToken) =>
        ConsoleLog.CopyAsync(spec.ConsoleLogPath, destination, follow, Exited, cancellationToken);

    public async Task<SnapshotInfo> CreateSnapshotAsync(string name, CancellationToken cancellationToken)
    {
        if (IsRunning)
        {
            await HumanMonitorAsync($"savevm {name}", cancellationToken).ConfigureAwait(false);
            QemuLog.Snapshot(logger, spec.MachineId, name, "taken", "live, with memory");
        }
        else
        {
            await qemuImg.CreateSnapshotAsync(overlay, name, cancellationToken).ConfigureAwait(false);
            QemuLog.Snapshot(logger, spec.MachineId, name, "taken", "disk only");
        }

        var snapshots = await ListSnapshotsAsync(cancellationToken).ConfigureAwait(false);
        return snapshots.LastOrDefault(s => s.Name == name)
            ?? throw new BackendOperationException($"snapshot {name} of machine {spec.MachineId} was taken but is not listed");
    }

    public async Task<IReadOnlyList<SnapshotInfo>> ListSnapshotsAsync(CancellationToken cancellationToken)
    {
        if (!IsRunning)
        {
            return await qemuImg.ListSnapshotsAsync(overlay, cancellationToken).ConfigureAwait(false);
        }

        // While QEMU has the overlay open, it is the one to ask.
        var blocks = await ExecuteAsync("query-block", cancellationToken).ConfigureAwait(false) as JsonArray;
        var image = blocks?.OfType<JsonObject>()
            .Select(b => b["inserted"]?["image"] as JsonObject)
            .FirstOrDefault(i => i?["filename"]?.GetValue<string>() == overlay);
        return QemuImg.ParseSnapshots(image?["snapshots"] as JsonArray);
    }

    public async Task RestoreSnapshotAsync(string name, CancellationToken cancellationToken)
    {
        if (IsRunning)
        {
            await HumanMonitorAsync($"loadvm {name}", cancellationToken).ConfigureAwait(false);
            QemuLog.Snapshot(logger, spec.MachineId, name, "restored", "live");
        }
        else
        {
            await qemuImg.ApplySnapshotAsync(overlay, name, cancellationToken).ConfigureAwait(false);
            QemuLog.Snapshot(logger, spec.MachineId, name, "restored", "disk only");
        }
    }

    public async Task DeleteSnapshotAsync(string name, CancellationToken cancellationToken)
    {
        if (IsRunning)
        {
            await HumanMonitorAsync($"delvm {name}", cancellationToken).ConfigureAwait(false);
        }
        else
        {
            await qemuImg.DeleteSnapshotAsync(overlay, name, cancellationToken).ConfigureAwait(false);
        }

        QemuLog.Snapshot(logger, spec.MachineId, name, "deleted", IsRunning ? "live" : "disk only");
    }

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

    private async Task<QmpClient> ConnectQmpAsync(CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(QmpConnectTimeout);
        return await QmpClient.ConnectAsync(_paths.QmpSocket, timeout.Token).ConfigureAwait(false);
    }

    private async Task<ProbeOutcome<QmpClient>> TryConnectAsync(QemuProcess process, CancellationToken cancellationToken)
    {
        if (process.HasExited)
        {
            var exit = await Exited!.ConfigureAwait(false);
            throw new MachineFailedException(spec.MachineId, $"QEMU of machine {spec.MachineId} ended at start: {exit.Description}", exit.ExitCode, exit.OutputTail);
        }

        if (!File.Exists(_paths.QmpSocket))
        {
            return ProbeOutcome.NotYet<QmpClient>("no QMP socket yet");
        }

        try
        {
            return ProbeOutcome.Done(await ConnectQmpAsync(cancellationToken).ConfigureAwait(false));
        }
        catch (SocketException e)
        {
            return ProbeOutcome.NotYet<QmpClient>(e.Message);
        }
        catch (QmpConnectionException e)
        {
            // QEMU closed the socket while greeting: most likely it is exiting, which the next look reports.
            return ProbeOutcome.NotYet<QmpClient>(e.Message);
        }
        catch (OperationCanceledException e) when (!cancellationToken.IsCancellationRequested)
        {
            throw new BackendOperationException($"QEMU of machine {spec.MachineId} accepted on {_paths.QmpSocket} but sent no QMP greeting within {QmpConnectTimeout.TotalSeconds:0} s", e);
        }
    }

    /// <summary>Logs events, and quits a QEMU that stays up after its guest shut down (a command with <c>-no-shutdown</c>).</summary>
    private async Task PumpEventsAsync(QmpClient qmp, QemuProcess process)
    {
        await foreach (var qmpEvent in qmp.Events.ReadAllAsync().ConfigureAwait(false))
        {
            QemuLog.QmpEvent(logger, spec.MachineId, qmpEvent.Name, qmpEvent.Data?.ToJsonString() ?? string.Empty);
            if (qmpEvent.Name == QmpEvent.Shutdown)
            {
                _lastShutdownReason = qmpEvent.Reason;
                _ = QuitIfLingeringAsync(qmp, process, qmpEvent.Reason ?? "unknown reason");
            }
            else if (qmpEvent.Name == QmpEvent.Stop)
            {
                // QEMU stops the guest itself for savevm/loadvm and on shutdown; only status "paused" is a pause from
                // outside. Asked here, in event order, so a RESUME that follows is handled after this answer.
                SetPaused(await IsPausedAsync(qmp, CancellationToken.None).ConfigureAwait(false));
            }
            else if (qmpEvent.Name == QmpEvent.Resume)
            {
                SetPaused(false);
            }
        }
    }

    private static async Task<bool> IsPausedAsync(QmpClient qmp, CancellationToken cancellationToken)
    {
        try
        {
            return (await qmp.ExecuteAsync("query-status", cancellationToken).ConfigureAwait(false))?["status"]?.GetValue<string>() == "paused";
        }
        catch (Exception e) when (e is QmpErrorException or QmpConnectionException)
        {
            // QEMU is on its way out: not paused, ending.
            return false;
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

    private async Task QuitIfLingeringAsync(QmpClient qmp, QemuProcess process, string reason)
    {
        try
        {
            await process.Exited.WaitAsync(QuitTimeout).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            if (ReferenceEquals(_qmp, qmp) && !process.HasExited)
            {
                QemuLog.QuitAfterShutdown(logger, spec.MachineId, reason);
                await TryExecuteAsync("quit", CancellationToken.None).ConfigureAwait(false);
            }
        }
    }

    private async Task QuitOrKillAsync(QemuProcess process, CancellationToken cancellationToken)
    {
        await TryExecuteAsync("quit", cancellationToken).ConfigureAwait(false);
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

    private async Task<JsonNode?> ExecuteAsync(string command, CancellationToken cancellationToken)
    {
        var qmp = _qmp ?? throw new BackendOperationException($"machine {spec.MachineId} has no QMP connection");
        try
        {
            return await qmp.ExecuteAsync(command, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is QmpErrorException or QmpConnectionException)
        {
            throw new BackendOperationException($"machine {spec.MachineId}: {e.Message}", e);
        }
    }

    /// <summary>A command whose failure is expected when QEMU is on its way out (powerdown, quit).</summary>
    private async Task TryExecuteAsync(string command, CancellationToken cancellationToken)
    {
        if (_qmp is not { } qmp)
        {
            return;
        }

        try
        {
            await qmp.ExecuteAsync(command, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is QmpErrorException or QmpConnectionException)
        {
            // QEMU is exiting or already gone; the process exit tells.
        }
    }

    /// <summary>HMP reports failures as text: a command that prints anything failed.</summary>
    private async Task HumanMonitorAsync(string commandLine, CancellationToken cancellationToken)
    {
        var qmp = _qmp ?? throw new BackendOperationException($"machine {spec.MachineId} has no QMP connection");
        string output;
        try
        {
            output = await qmp.HumanMonitorCommandAsync(commandLine, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is QmpErrorException or QmpConnectionException)
        {
            throw new BackendOperationException($"machine {spec.MachineId}: {commandLine}: {e.Message}", e);
        }

        if (!string.IsNullOrWhiteSpace(output))
        {
            throw new BackendOperationException($"machine {spec.MachineId}: {commandLine} failed: {output.Trim()}");
        }
    }

    private async Task DisconnectAsync()
    {
        if (_qmp is not null)
        {
            await _qmp.DisposeAsync().ConfigureAwait(false);
            _qmp = null;
        }

        if (_eventPump is not null)
        {
            await _eventPump.ConfigureAwait(false);
            _eventPump = null;
        }
    }

    private async Task<MachineExit> DescribeExitAsync(QemuProcess process)
    {
        var code = await process.Exited.ConfigureAwait(false);
        await process.WaitForOutputAsync(TimeSpan.FromSeconds(1)).ConfigureAwait(false);

        var tail = OutputTail();
        MachineExit exit;
        if (code is null)
        {
            // Taken back after a restart, so not our child: the exit code is gone, but QMP told why it went.
            exit = FindPanic() is { } panic ? new MachineExit(null, "the guest kernel panicked", panic + "\n…\n" + tail)
                : _lastShutdownReason is null or "guest-panic" ? new MachineExit(null, $"QEMU ended{(_lastShutdownReason is null ? string.Empty : " (" + _lastShutdownReason + ")")}; its exit code is not known after a daemon restart", tail)
                : new MachineExit(0, $"QEMU ended after a shutdown ({_lastShutdownReason})", tail);
        }
        else if (code > 128)
        {
            exit = new MachineExit(code, $"QEMU was ended by signal {code - 128} (exit code {code})", tail);
        }
        else if (code != 0)
        {
            exit = new MachineExit(code, $"QEMU exited with code {code}", tail);
        }
        else if (FindPanic() is { } panic)
        {
            // QEMU ends with 0 after a panic with -no-reboot: the exit code cannot tell, the console can.
            // No exit code, so the machine counts as failed, not stopped. The panic line is above the stack trace.
            exit = new MachineExit(null, "the guest kernel panicked (QEMU exited with code 0)", panic + "\n…\n" + tail);
        }
        else if (_lastShutdownReason == "guest-panic")
        {
            exit = new MachineExit(null, "the guest panicked (QEMU exited with code 0)", tail);
        }
        else
        {
            exit = new MachineExit(0, $"QEMU exited with code 0 (guest shutdown{(_lastShutdownReason is null ? string.Empty : ": " + _lastShutdownReason)})", tail);
        }

        QemuLog.Exited(logger, spec.MachineId, exit.Description);
        return exit;
    }

    /// <summary>The console's first "Kernel panic" line since the last launch, if any.</summary>
    private string? FindPanic()
    {
        const int MaxBytes = 1 << 20;
        try
        {
            using var file = new FileStream(spec.ConsoleLogPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            var start = Math.Max(_consoleStart, file.Length - MaxBytes);
            file.Seek(start, SeekOrigin.Begin);
            using var reader = new StreamReader(file, Encoding.UTF8);
            while (reader.ReadLine() is { } line)
            {
                if (line.Contains(PanicMarker, StringComparison.Ordinal))
                {
                    return line.TrimEnd('\r');
                }
            }
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or IOException)
        {
            // No console, no panic to report.
        }

        return null;
    }

    private string ConsoleTail(int maxBytes = 4096, int maxLines = 20)
    {
        try
        {
            using var file = new FileStream(spec.ConsoleLogPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            var length = (int)Math.Min(file.Length, maxBytes);
            file.Seek(-length, SeekOrigin.End);
            var buffer = new byte[length];
            file.ReadExactly(buffer);
            var lines = Encoding.UTF8.GetString(buffer).Replace("\r", string.Empty, StringComparison.Ordinal).TrimEnd('\n').Split('\n');
            return string.Join('\n', lines.Skip(Math.Max(0, lines.Length - maxLines)));
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or IOException)
        {
            return string.Empty;
        }
    }
}
