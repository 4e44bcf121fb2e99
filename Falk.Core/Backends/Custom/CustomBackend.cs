using System.Globalization;
using Falk.Core.Machines;
using Falk.Core.Processes;
using Falk.Core.Unix;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Backends.Custom;

/// <summary>
/// Machines made of the template's own commands, as in the original daemon: <c>prepare</c>, then <c>launch</c>
/// (the machine runs while that process lives), then <c>cleanup</c>. Each sees <c>FALK_MANAGE</c> and
/// <c>FALK_SSH_PORT</c>; <c>{SSHPORT}</c> is substituted inside the arguments, after splitting.
/// </summary>
public sealed class CustomBackend(IProcessRunner runner, ILogger<CustomBackend> logger) : IMachineBackend
{
    public string Type => CustomTemplateOptions.Descriptor.Type;

    public async Task<IMachineInstance> PrepareAsync(MachineSpec spec, CancellationToken cancellationToken)
    {
        var machine = new CustomMachine(spec, (CustomTemplateOptions)spec.Template.BackendOptions, runner, logger);
        await machine.RunStepAsync("prepare", machine.Options.Prepare, cancellationToken).ConfigureAwait(false);
        return machine;
    }
}

internal sealed class CustomMachine(MachineSpec spec, CustomTemplateOptions options, IProcessRunner runner, ILogger logger) : IMachineInstance
{
    /// <summary>Set for every command of a machine, so its processes can be found wherever they went.</summary>
    public const string MachineIdVariable = "FALK_MACHINE_ID";

    private readonly Lock _consoleLock = new();
    private RunningProcess? _launch;
    private StreamWriter? _console;
    private bool _cleanedUp;

    public CustomTemplateOptions Options { get; } = options;

    public Task<MachineExit>? Exited { get; private set; }

    public async Task LaunchAsync(CancellationToken cancellationToken)
    {
        if (_launch is not null)
        {
            await _launch.DisposeAsync().ConfigureAwait(false);
        }

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

    public async Task StopAsync(TimeSpan grace, CancellationToken cancellationToken)
    {
        if (_launch is not null)
        {
            await _launch.StopAsync(grace, cancellationToken).ConfigureAwait(false);
        }

        KillStragglers();
    }

    public async Task KillAsync(CancellationToken cancellationToken)
    {
        if (_launch is not null)
        {
            await _launch.KillAsync(cancellationToken).ConfigureAwait(false);
        }

        KillStragglers();
    }

    public async Task CleanupAsync(CancellationToken cancellationToken)
    {
        if (_launch is not null)
        {
            await _launch.DisposeAsync().ConfigureAwait(false);
        }

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

    private void WriteConsole(string line)
    {
        CustomLog.Output(logger, spec.MachineId, line);
        lock (_consoleLock)
        {
            _console?.WriteLine(line);
        }
    }

    /// <summary>
    /// Processes of this machine that escaped the launch process's tree (double-forked into a session of their own)
    /// still carry the machine id in their environment; the original left exactly these listening on the port.
    /// </summary>
    private void KillStragglers()
    {
        foreach (var pid in ProcessTree.WithEnvironment(MachineIdVariable, spec.MachineId))
        {
            ProcessTree.Kill(pid);
        }
    }

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

    private ProcessSpec Spec(IReadOnlyList<string> command)
    {
        var port = spec.SshPort.ToString(CultureInfo.InvariantCulture);
        return new ProcessSpec(command.Select(a => a.Replace(CustomTemplateOptions.SshPortPlaceholder, port, StringComparison.Ordinal)).ToList())
        {
            Environment = new Dictionary<string, string?>
            {
                ["FALK_MANAGE"] = spec.Manage ? "true" : string.Empty,
                ["FALK_SSH_PORT"] = port,
                [MachineIdVariable] = spec.MachineId,
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
}
