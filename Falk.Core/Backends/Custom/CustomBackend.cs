using System.Globalization;
using System.Text.Json;
using Falk.Core.Config;
using Falk.Core.Machines;
using Falk.Core.Processes;
using Falk.Core.Unix;
using Falk.Core.Waiting;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Backends.Custom;

/// <summary>
/// Machines made of the template's own commands, as in the original daemon: <c>prepare</c>, then <c>launch</c>
/// (the machine runs while that process lives), then <c>cleanup</c>. Each sees <c>FALK_MANAGE</c> and
/// <c>FALK_SSH_PORT</c>; <c>{SSHPORT}</c> is substituted inside the arguments, after splitting.
/// Every process also carries the machine's <see cref="ProcessMarks"/>, and the launch leads a session and process group
/// of its own, recorded in the machine's handle: so whatever a command leaves behind can be found and ended, even after
/// a daemon restart and even when it lost the marks.
/// </summary>
public sealed class CustomBackend(IProcessRunner runner, FalkConfig config, ILogger<CustomBackend> logger) : IMachineBackend
{
    /// <summary>
    /// The processes as the recovery pass found them, read once for all recorded machines instead of once per machine
    /// (100 gone machines took 100 scans of /proc, each reading every process's environment: seconds). Recovery runs
    /// before the daemon takes requests, so nothing of a machine is launched meanwhile, and whatever a machine's
    /// processes fork carries their marks or joins their session: a machine with nothing in the snapshot has nothing.
    /// </summary>
    private RecoveryProcesses? _recoverySnapshot;

    public string Type => CustomTemplateOptions.Descriptor.Type;

    private RecoveryProcesses RecoverySnapshot() => _recoverySnapshot ??= RecoveryProcesses.Take(config.Daemon.InstanceId);

    public async Task<IMachineInstance> PrepareAsync(MachineSpec spec, CancellationToken cancellationToken)
    {
        var machine = new CustomMachine(spec, runner, logger);
        await machine.RunStepAsync("prepare", machine.Options.Prepare, cancellationToken).ConfigureAwait(false);
        return machine;
    }

    public async Task<ReattachedMachine?> ReattachAsync(MachineSpec spec, string? handle, MachineState? recordedState, CancellationToken cancellationToken)
    {
        var machine = new CustomMachine(spec, runner, logger);
        var launch = CustomHandle.Read(handle)?.Launch;
        if (launch is not null && launch.LeaderHoldsIds && ProcessTree.IsSameLiveProcess(launch.ProcessGroup, launch.LeaderStartTime))
        {
            machine.Adopt(launch);
            return new ReattachedMachine(machine, Running: true);
        }

        // The launch ended while the daemon was away (or never ran): nothing of the machine may run on, whether or not
        // it kept the marks. The record stays for a machine that was not running anyway.
        machine.Forget(launch);
        if (RecoverySnapshot().Holds(spec.MachineId, launch))
        {
            await machine.KillAsync(cancellationToken).ConfigureAwait(false);
        }
        if (recordedState is MachineState.Prepared or MachineState.Stopped or MachineState.Failed)
        {
            return new ReattachedMachine(machine, Running: false);
        }

        // Died during prepare, or its launch ended while the daemon was away: undo what is left.
        await machine.CleanupAsync(cancellationToken).ConfigureAwait(false);
        return null;
    }

    public async Task RemoveOrphansAsync(IReadOnlySet<string> knownMachineIds, CancellationToken cancellationToken)
    {
        // Every recorded machine has been reattached or cleaned up: the next recovery looks afresh.
        _recoverySnapshot = null;
        IReadOnlyList<MarkedProcess> Orphans() =>
            ProcessMarks.OfInstance(config.Daemon.InstanceId).Where(m => !knownMachineIds.Contains(m.MachineId)).ToList();

        foreach (var orphan in Orphans())
        {
            CustomLog.OrphanKilled(logger, orphan.MachineId, orphan.Process.Pid);
        }

        await ProcessMarks.KillUntilGoneAsync(() => Orphans().Select(m => m.Process).ToList(), "processes of unknown machines to end", cancellationToken).ConfigureAwait(false);
    }
}

/// <summary>The processes alive when recovery began, and the machine each marked one names.</summary>
internal sealed record RecoveryProcesses(IReadOnlyList<ProcessInfo> All, IReadOnlySet<string> MarkedMachines)
{
    public static RecoveryProcesses Take(string instanceId) =>
        new(ProcessTree.All(), ProcessMarks.OfInstance(instanceId).Select(m => m.MachineId).ToHashSet(StringComparer.Ordinal));

    /// <summary>Whether anything of machine <paramref name="machineId"/> ran: a process with its marks, or a member of its launch's group or session.</summary>
    public bool Holds(string machineId, SessionMark? launch) => MarkedMachines.Contains(machineId) || launch?.Members(All).Count > 0;
}

/// <summary>What a custom machine needs to be found again: its launch's session and process group, and the leader's start time.</summary>
internal sealed record CustomHandle(int? Pid, long? StartTime, int? ProcessGroup = null, int? Session = null, string? BootId = null)
{
    public SessionMark? Launch => SessionMark.Recorded(Pid, StartTime, ProcessGroup, Session, BootId);

    public static CustomHandle Of(SessionMark? launch) =>
        launch is null ? new CustomHandle(null, null) : new CustomHandle(launch.ProcessGroup, launch.LeaderStartTime, launch.ProcessGroup, launch.Session, launch.BootId);

    public static CustomHandle? Read(string? handle)
    {
        try
        {
            return handle is null ? null : JsonSerializer.Deserialize<CustomHandle>(handle);
        }
        catch (JsonException)
        {
            // Not a custom handle: treated as none, so the machine is cleaned up by its marks.
            return null;
        }
    }
}

internal sealed class CustomMachine(MachineSpec spec, IProcessRunner runner, ILogger logger) : IMachineInstance, IProcessOwnership
{
    private static readonly TimeSpan AdoptedPollInterval = TimeSpan.FromMilliseconds(200);

    private readonly Lock _consoleLock = new();
    private RunningProcess? _launch;
    private SessionMark? _adopted;
    private SessionMark? _lastLaunch;
    private ConsoleLogWriter? _console;
    private bool _cleanedUp;

    public CustomTemplateOptions Options { get; } = (CustomTemplateOptions)spec.Template.BackendOptions;

    public Task<MachineExit>? Exited { get; private set; }

    public string? Handle => JsonSerializer.Serialize(CustomHandle.Of(_lastLaunch));

    public async Task LaunchAsync(CancellationToken cancellationToken)
    {
        // Nothing of an earlier launch runs beside the next one (its end is reported once all of it is gone).
        await ReleaseLaunchAsync().ConfigureAwait(false);
        if (Exited is { } previous)
        {
            await KillAsync(cancellationToken).ConfigureAwait(false);
            await previous.WaitAsync(cancellationToken).ConfigureAwait(false);
        }

        lock (_consoleLock)
        {
            _console ??= new ConsoleLogWriter(spec.ConsoleLogPath, spec.ConsoleMaxBytes);
        }

        var processSpec = Spec(Options.Launch) with
        {
            OwnProcessGroup = true,
            OnOutputLine = WriteConsole,
            OnOutputRead = FlushConsole,
        };
        var launch = runner.Start(processSpec);
        _launch = launch;
        _lastLaunch = launch.Session;
        CustomLog.Launched(logger, spec.MachineId, launch.Pid, processSpec.ToString());
        Exited = DescribeExitAsync(launch);
    }

    /// <summary>Takes back a launch process that outlived an earlier daemon; its end is noticed by polling.</summary>
    public void Adopt(SessionMark launch)
    {
        _adopted = launch;
        _lastLaunch = launch;
        Exited = WatchAdoptedAsync(launch);
    }

    /// <summary>Remembers a launch that ended while the daemon was away, so that what it left is found by its session.</summary>
    public void Forget(SessionMark? launch) => _lastLaunch = launch;

    public async Task StopAsync(TimeSpan grace, CancellationToken cancellationToken)
    {
        if (_launch is not null)
        {
            await _launch.StopAsync(grace, cancellationToken).ConfigureAwait(false);
        }
        else if (_adopted is { } adopted && Exited is { } exited)
        {
            adopted.SignalGroup(Native.SIGTERM);
            await Task.WhenAny(exited, Task.Delay(grace, cancellationToken)).ConfigureAwait(false);
        }

        await KillLeftoversAsync(cancellationToken).ConfigureAwait(false);
    }

    public async Task KillAsync(CancellationToken cancellationToken)
    {
        if (_launch is not null)
        {
            await _launch.KillAsync(cancellationToken).ConfigureAwait(false);
        }

        _adopted?.KillAll();
        await KillLeftoversAsync(cancellationToken).ConfigureAwait(false);
    }

    public async Task CleanupAsync(CancellationToken cancellationToken)
    {
        await ReleaseLaunchAsync().ConfigureAwait(false);
        lock (_consoleLock)
        {
            _console?.Dispose();
            _console = null;
        }

        if (!_cleanedUp)
        {
            await RunStepAsync("cleanup", Options.Cleanup, cancellationToken).ConfigureAwait(false);
            _cleanedUp = true;
        }
    }

    public string OutputTail() => _launch?.OutputTail() ?? string.Empty;

    public bool ServesOwnSshPort => Options.SshServedByLaunch;

    /// <summary>The launch's leader: a launch that is the SSH server (sshd -D) holds the listener itself.</summary>
    public IEnumerable<int> ListenerCandidates => _launch is { } launch ? [launch.Pid] : _adopted is { } adopted ? [adopted.ProcessGroup] : [];

    /// <summary>A member of the launch's group or session, or a process carrying the machine's marks.</summary>
    public bool OwnsProcess(int pid) =>
        ProcessTree.Read(pid) is { } process
        && ((_lastLaunch?.Members([process]).Count ?? 0) > 0
            || (ProcessTree.EnvironmentValue(pid, ProcessMarks.MachineIdVariable) == spec.MachineId
                && ProcessTree.EnvironmentValue(pid, ProcessMarks.InstanceVariable) == spec.InstanceId));

    /// <summary>The launch command's stdout and stderr, as written to the machine's console log.</summary>
    public Task CopyConsoleAsync(Stream destination, bool follow, CancellationToken cancellationToken) =>
        ConsoleLog.CopyAsync(spec.ConsoleLogPath, destination, follow, Exited, cancellationToken);

    internal async Task RunStepAsync(string step, IReadOnlyList<string>? command, CancellationToken cancellationToken)
    {
        if (command is null)
        {
            return;
        }

        var processSpec = Spec(command) with { OwnProcessGroup = true };
        CustomLog.RunningStep(logger, spec.MachineId, step, processSpec.ToString());
        try
        {
            await runner.RunAsync(processSpec, Options.CommandTimeout, cancellationToken).ConfigureAwait(false);
        }
        catch (ProcessFailedException e)
        {
            throw new BackendOperationException($"{step} of machine {spec.MachineId} failed: {e.Message}", e);
        }
    }

    private async Task ReleaseLaunchAsync()
    {
        if (_launch is not null)
        {
            await _launch.DisposeAsync().ConfigureAwait(false);
            _launch = null;
        }

        _adopted = null;
    }

    private void WriteConsole(string line)
    {
        CustomLog.Output(logger, spec.MachineId, line);
        lock (_consoleLock)
        {
            _console?.WriteLine(line);
        }
    }

    private void FlushConsole()
    {
        lock (_consoleLock)
        {
            _console?.Flush();
        }
    }

    /// <summary>
    /// Ends every process of the machine and returns once they are gone, so "stopped" means stopped and the port is
    /// free: those in the launch's session or group (even when they rewrote their environment, as sshd does), and those
    /// carrying the machine's marks (even when they double-forked into a session of their own).
    /// </summary>
    private Task KillLeftoversAsync(CancellationToken cancellationToken)
    {
        var launch = _lastLaunch;
        return ProcessMarks.KillUntilGoneAsync(
            () => ProcessMarks.OfMachine(spec.MachineId, spec.InstanceId, launch),
            $"the processes of machine {spec.MachineId} to end",
            cancellationToken);
    }

    /// <summary>The launch ended: what it started goes with it, before the end is reported.</summary>
    private async Task EndWithLaunchAsync()
    {
        try
        {
            await KillLeftoversAsync(CancellationToken.None).ConfigureAwait(false);
        }
        catch (WaitTimeoutException e)
        {
            CustomLog.LeftoversSurvived(logger, spec.MachineId, e.Message);
        }
    }

    private ProcessSpec Spec(IReadOnlyList<string> command)
    {
        var port = spec.SshPort.ToString(CultureInfo.InvariantCulture);
        return new ProcessSpec(command.Select(a => a.Replace(CustomTemplateOptions.SshPortPlaceholder, port, StringComparison.Ordinal)).ToList())
        {
            Environment = new Dictionary<string, string?>(ProcessMarks.Environment(spec.MachineId, spec.InstanceId))
            {
                ["FALK_MANAGE"] = spec.Manage ? "true" : string.Empty,
                ["FALK_SSH_PORT"] = port,

                // The same under the names of the justin era (falk's later name), for its scripts.
                ["JUSTIN_MANAGE"] = spec.Manage ? "true" : string.Empty,
                ["JUSTIN_SSH_PORT"] = port,
            },
        };
    }

    private async Task<MachineExit> DescribeExitAsync(RunningProcess launch)
    {
        var code = await launch.Exited.ConfigureAwait(false);
        await EndWithLaunchAsync().ConfigureAwait(false);
        try
        {
            // The last words (a panic, a usage error) are still in the pipe when the exit is reported.
            await launch.WaitForOutputAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(1)).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // Something outside the machine's reach holds the pipe open; report what was read.
        }

        var description = code > 128
            ? $"launch process ended by signal {code - 128} (exit code {code})"
            : $"launch process exited with code {code}";
        return new MachineExit(code, description, launch.OutputTail());
    }

    private async Task<MachineExit> WatchAdoptedAsync(SessionMark launch)
    {
        // Not our child any more: no exit code to collect, only whether it still exists.
        await ProcessTree.WaitUntilGoneAsync(launch.ProcessGroup, launch.LeaderStartTime, AdoptedPollInterval).ConfigureAwait(false);
        await EndWithLaunchAsync().ConfigureAwait(false);
        return new MachineExit(null, "launch process ended (its exit code is not known after a daemon restart)", string.Empty);
    }
}
