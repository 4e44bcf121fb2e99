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
/// Every process also carries <c>FALK_MACHINE_ID</c> and <c>FALK_INSTANCE</c>, so whatever a command leaves
/// behind can be found and ended, even after a daemon restart.
/// </summary>
public sealed class CustomBackend(IProcessRunner runner, FalkConfig config, ILogger<CustomBackend> logger) : IMachineBackend
{
    public const string MachineIdVariable = "FALK_MACHINE_ID";
    public const string InstanceVariable = "FALK_INSTANCE";

    public string Type => CustomTemplateOptions.Descriptor.Type;

    public async Task<IMachineInstance> PrepareAsync(MachineSpec spec, CancellationToken cancellationToken)
    {
        var machine = new CustomMachine(spec, runner, logger);
        await machine.RunStepAsync("prepare", machine.Options.Prepare, cancellationToken).ConfigureAwait(false);
        return machine;
    }

    public async Task<ReattachedMachine?> ReattachAsync(MachineSpec spec, string? handle, MachineState? recordedState, CancellationToken cancellationToken)
    {
        var machine = new CustomMachine(spec, runner, logger);
        var launch = handle is null ? null : JsonSerializer.Deserialize<CustomHandle>(handle);
        var launchAlive = launch is { Pid: { } pid, StartTime: { } start } && ProcessTree.IsSameLiveProcess(pid, start);
        if (launchAlive)
        {
            machine.Adopt(launch!.Pid!.Value, launch.StartTime!.Value);
            return new ReattachedMachine(machine, Running: true);
        }

        if (recordedState is MachineState.Prepared or MachineState.Stopped or MachineState.Failed)
        {
            return new ReattachedMachine(machine, Running: false);
        }

        // Died during prepare, or its launch ended while the daemon was away: undo what is left.
        await machine.KillAsync(cancellationToken).ConfigureAwait(false);
        await machine.CleanupAsync(cancellationToken).ConfigureAwait(false);
        return null;
    }

    public Task RemoveOrphansAsync(IReadOnlySet<string> knownMachineIds, CancellationToken cancellationToken)
    {
        foreach (var pid in ProcessTree.WithEnvironment(InstanceVariable, config.Daemon.InstanceId))
        {
            if (ProcessTree.EnvironmentValue(pid, MachineIdVariable) is { } machineId && !knownMachineIds.Contains(machineId))
            {
                CustomLog.OrphanKilled(logger, machineId, pid);
                ProcessTree.Kill(pid);
            }
        }

        return Task.CompletedTask;
    }
}

/// <summary>What a custom machine needs to be found again: its launch process, recognised by pid and start time.</summary>
internal sealed record CustomHandle(int? Pid, long? StartTime);

internal sealed class CustomMachine(MachineSpec spec, IProcessRunner runner, ILogger logger) : IMachineInstance
{
    private static readonly TimeSpan AdoptedPollInterval = TimeSpan.FromMilliseconds(200);
    private static readonly TimeSpan StragglerTimeout = TimeSpan.FromSeconds(10);

    private readonly Lock _consoleLock = new();
    private RunningProcess? _launch;
    private (int Pid, long StartTime)? _adopted;
    private StreamWriter? _console;
    private bool _cleanedUp;

    public CustomTemplateOptions Options { get; } = (CustomTemplateOptions)spec.Template.BackendOptions;

    public Task<MachineExit>? Exited { get; private set; }

    public string? Handle => JsonSerializer.Serialize(
        _launch is not null ? new CustomHandle(_launch.Pid, _launch.StartTime)
        : _adopted is { } adopted ? new CustomHandle(adopted.Pid, adopted.StartTime)
        : new CustomHandle(null, null));

    public async Task LaunchAsync(CancellationToken cancellationToken)
    {
        await ReleaseLaunchAsync().ConfigureAwait(false);
        lock (_consoleLock)
        {
            _console ??= new StreamWriter(new FileStream(spec.ConsoleLogPath, FileMode.Append, FileAccess.Write, FileShare.ReadWrite)) { AutoFlush = true };
        }

        var processSpec = Spec(Options.Launch) with
        {
            OwnProcessGroup = true,
            OnOutputLine = WriteConsole,
        };
        var launch = runner.Start(processSpec);
        _launch = launch;
        CustomLog.Launched(logger, spec.MachineId, launch.Pid, processSpec.ToString());
        Exited = DescribeExitAsync(launch);
    }

    /// <summary>Takes back a launch process that outlived an earlier daemon; its end is noticed by polling.</summary>
    public void Adopt(int pid, long startTime)
    {
        _adopted = (pid, startTime);
        Exited = WatchAdoptedAsync(pid, startTime);
    }

    public async Task StopAsync(TimeSpan grace, CancellationToken cancellationToken)
    {
        if (_launch is not null)
        {
            await _launch.StopAsync(grace, cancellationToken).ConfigureAwait(false);
        }
        else if (_adopted is { } adopted && Exited is { } exited)
        {
            SignalAdopted(adopted, Native.SIGTERM);
            await Task.WhenAny(exited, Task.Delay(grace, cancellationToken)).ConfigureAwait(false);
        }

        await KillStragglersAsync(cancellationToken).ConfigureAwait(false);
    }

    public async Task KillAsync(CancellationToken cancellationToken)
    {
        if (_launch is not null)
        {
            await _launch.KillAsync(cancellationToken).ConfigureAwait(false);
        }

        if (_adopted is { } adopted)
        {
            SignalAdopted(adopted, Native.SIGKILL);
        }

        await KillStragglersAsync(cancellationToken).ConfigureAwait(false);
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

    private static void SignalAdopted((int Pid, long StartTime) adopted, int signal)
    {
        if (ProcessTree.IsSameLiveProcess(adopted.Pid, adopted.StartTime))
        {
            _ = Native.kill(-adopted.Pid, signal);
            _ = Native.kill(adopted.Pid, signal);
        }
    }

    /// <summary>
    /// Processes of this machine that escaped the launch process's tree (double-forked into a session of their own)
    /// still carry the machine id in their environment; the original left exactly these listening on the port.
    /// </summary>
    private async Task KillStragglersAsync(CancellationToken cancellationToken)
    {
        // SIGKILL is delivered asynchronously: return only once they are gone, so "stopped" means stopped.
        await Wait.UntilAsync(
            _ =>
            {
                var left = ProcessTree.WithEnvironment(CustomBackend.MachineIdVariable, spec.MachineId);
                foreach (var pid in left)
                {
                    ProcessTree.Kill(pid);
                }

                return Task.FromResult(left.Count == 0 ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>($"{left.Count} processes left"));
            },
            TimeSpan.FromMilliseconds(20),
            StragglerTimeout,
            $"the processes of machine {spec.MachineId} to end",
            cancellationToken).ConfigureAwait(false);
    }

    private ProcessSpec Spec(IReadOnlyList<string> command)
    {
        var port = spec.SshPort.ToString(CultureInfo.InvariantCulture);
        return new ProcessSpec(command.Select(a => a.Replace(CustomTemplateOptions.SshPortPlaceholder, port, StringComparison.Ordinal)).ToList())
        {
            Environment = new Dictionary<string, string?>
            {
                ["FALK_MANAGE"] = spec.Manage ? "true" : string.Empty,
                ["FALK_SSH_PORT"] = port,

                // The same under the names of the justin era (falk's later name), for its scripts.
                ["JUSTIN_MANAGE"] = spec.Manage ? "true" : string.Empty,
                ["JUSTIN_SSH_PORT"] = port,
                [CustomBackend.MachineIdVariable] = spec.MachineId,
                [CustomBackend.InstanceVariable] = spec.InstanceId,
            },
        };
    }

    private static async Task<MachineExit> DescribeExitAsync(RunningProcess launch)
    {
        var code = await launch.Exited.ConfigureAwait(false);
        try
        {
            // The last words (a panic, a usage error) are still in the pipe when the exit is reported.
            await launch.WaitForOutputAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(1)).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // A grandchild holds the pipe open; report what was read.
        }

        var description = code > 128
            ? $"launch process ended by signal {code - 128} (exit code {code})"
            : $"launch process exited with code {code}";
        return new MachineExit(code, description, launch.OutputTail());
    }

    private static async Task<MachineExit> WatchAdoptedAsync(int pid, long startTime)
    {
        // Not our child any more: no exit code to collect, only whether it still exists.
        await ProcessTree.WaitUntilGoneAsync(pid, startTime, AdoptedPollInterval).ConfigureAwait(false);

        return new MachineExit(null, "launch process ended (its exit code is not known after a daemon restart)", string.Empty);
    }
}
