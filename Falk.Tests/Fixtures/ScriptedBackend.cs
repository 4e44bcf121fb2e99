using Falk.Core.Config;
using Falk.Core.Machines;
using Falk.Core.Ssh;

namespace Falk.Tests.Fixtures;

/// <summary>
/// A backend whose every step the test controls: launches wait on a gate, exits happen when the test says so, and
/// snapshots and commits can be held part way. For exact interleavings without timing luck.
/// </summary>
public sealed class ScriptedBackend : IMachineBackend
{
    public List<ScriptedInstance> Instances { get; } = [];

    public Task LaunchGate { get; set; } = Task.CompletedTask;

    /// <summary>Thrown by the next launches, as a backend with a bug would.</summary>
    public Exception? LaunchException { get; set; }

    /// <summary>Snapshot and commit operations wait for it (with their token) before they do anything.</summary>
    public Task OperationGate { get; set; } = Task.CompletedTask;

    /// <summary>Completed once an operation is waiting at <see cref="OperationGate"/>.</summary>
    public TaskCompletionSource AtOperationGate { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public bool FailPrepare { get; set; }

    /// <summary>What a machine's cleanup waits for, by machine id: a slow delete.</summary>
    public Func<string, Task> CleanupGate { get; set; } = _ => Task.CompletedTask;

    /// <summary>Machines to hand back on reattach, by id, with whether they run.</summary>
    public Dictionary<string, bool> Alive { get; } = new(StringComparer.Ordinal);

    public List<IReadOnlySet<string>> OrphanSweeps { get; } = [];

    public string Type => "scripted";

    /// <summary>When set, every template's management machine edits this one image (as templates on one base_image do).</summary>
    public string? SharedImage { get; set; }

    public string ManagementScope(TemplateDefinition definition) => SharedImage ?? definition.Id;

    public Task<ReattachedMachine?> ReattachAsync(MachineSpec spec, string? handle, MachineState? recordedState, CancellationToken cancellationToken)
    {
        if (!Alive.TryGetValue(spec.MachineId, out var running))
        {
            return Task.FromResult<ReattachedMachine?>(null);
        }

        var instance = Add(spec);
        if (running)
        {
            instance.StartRunning();
        }

        return Task.FromResult<ReattachedMachine?>(new ReattachedMachine(instance, running));
    }

    public Task RemoveOrphansAsync(IReadOnlySet<string> knownMachineIds, CancellationToken cancellationToken)
    {
        OrphanSweeps.Add(knownMachineIds);
        return Task.CompletedTask;
    }

    public Task<IMachineInstance> PrepareAsync(MachineSpec spec, CancellationToken cancellationToken)
    {
        if (FailPrepare)
        {
            throw new BackendOperationException("prepare failed");
        }

        return Task.FromResult<IMachineInstance>(Add(spec));
    }

    private ScriptedInstance Add(MachineSpec spec)
    {
        var instance = new ScriptedInstance(this, spec);
        lock (Instances)
        {
            Instances.Add(instance);
        }

        return instance;
    }
}

public sealed class ScriptedInstance(ScriptedBackend backend, MachineSpec spec) : IMachineInstance, ISnapshotSupport, ICommitSupport
{
    private readonly List<SnapshotInfo> _snapshots = [];
    private TaskCompletionSource<MachineExit> _exit = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public MachineSpec Spec { get; } = spec;

    public int Launches { get; private set; }

    public int Stops { get; private set; }

    public bool Killed { get; private set; }

    public int CleanedUp { get; private set; }

    public Task<MachineExit>? Exited { get; private set; }

    public string? Handle => $"{{\"launches\":{Launches}}}";

    public async Task LaunchAsync(CancellationToken cancellationToken)
    {
        await backend.LaunchGate.WaitAsync(cancellationToken);
        if (backend.LaunchException is { } exception)
        {
            throw exception;
        }

        Launches++;
        StartRunning();
    }

    internal void StartRunning()
    {
        _exit = new(TaskCreationOptions.RunContinuationsAsynchronously);
        Exited = _exit.Task;
    }

    public void Exit(int code) => _exit.TrySetResult(new MachineExit(code, $"exit {code}", "tail"));

    public Task StopAsync(TimeSpan grace, CancellationToken cancellationToken)
    {
        Stops++;
        Exit(0);
        return Task.CompletedTask;
    }

    public Task KillAsync(CancellationToken cancellationToken)
    {
        Killed = true;
        Exit(137);
        return Task.CompletedTask;
    }

    public Task CleanupAsync(CancellationToken cancellationToken)
    {
        CleanedUp++;
        return backend.CleanupGate(Spec.MachineId);
    }

    public string OutputTail() => "tail";

    public Task CopyConsoleAsync(Stream destination, bool follow, CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task<SnapshotInfo> CreateSnapshotAsync(string name, CancellationToken cancellationToken)
    {
        await AtGateAsync(cancellationToken);
        var snapshot = new SnapshotInfo(name, DateTimeOffset.UnixEpoch, 1, IncludesMemory: false);
        lock (_snapshots)
        {
            _snapshots.Add(snapshot);
        }

        return snapshot;
    }

    public Task<IReadOnlyList<SnapshotInfo>> ListSnapshotsAsync(CancellationToken cancellationToken)
    {
        lock (_snapshots)
        {
            return Task.FromResult<IReadOnlyList<SnapshotInfo>>(_snapshots.ToList());
        }
    }

    public Task RestoreSnapshotAsync(string name, CancellationToken cancellationToken) => AtGateAsync(cancellationToken);

    public async Task DeleteSnapshotAsync(string name, CancellationToken cancellationToken)
    {
        await AtGateAsync(cancellationToken);
        lock (_snapshots)
        {
            _snapshots.RemoveAll(s => s.Name == name);
        }
    }

    public async Task<CommitResult> CommitAsync(CancellationToken cancellationToken)
    {
        await AtGateAsync(cancellationToken);
        return new CommitResult("v1");
    }

    private Task AtGateAsync(CancellationToken cancellationToken)
    {
        backend.AtOperationGate.TrySetResult();
        return backend.OperationGate.WaitAsync(cancellationToken);
    }
}

/// <summary>An SSH probe that answers ready (with a fixed key) or refuses, as the test says.</summary>
public sealed class ScriptedProbe : ISshProbe
{
    public bool Ready { get; set; } = true;

    public TaskCompletionSource Probed { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public Task<SshProbeResult> ProbeAsync(SshEndpoint endpoint, IReadOnlyList<HostKey> pinnedKeys, TimeSpan attemptTimeout, CancellationToken cancellationToken)
    {
        Probed.TrySetResult();
        return Task.FromResult(Ready
            ? new SshProbeResult(true, new HostKey("ssh-ed25519", [1, 2, 3]), false, null)
            : new SshProbeResult(false, null, false, "connection refused"));
    }
}
