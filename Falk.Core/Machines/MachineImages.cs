using Microsoft.Extensions.Logging;

namespace Falk.Core.Machines;

/// <summary>
/// What a machine's disk can become: snapshots (taken, listed, restored, deleted; at most
/// <c>max_snapshots_per_machine</c> at once) and a management commit.
/// </summary>
public sealed class MachineImages(Config.FalkConfig config, MachineJobs jobs, MachineTransitions transitions, MachineEvents events, WarmPools pools, ILogger<MachineService> logger)
{
    internal Task<SnapshotInfo> CreateSnapshotAsync(Machine machine, string name, CancellationToken cancellationToken) =>
        WithSnapshotsAsync(machine, "take snapshots", name, async (snapshots, token) =>
        {
            var existing = await snapshots.ListSnapshotsAsync(token).ConfigureAwait(false);
            if (existing.Any(s => s.Name == name))
            {
                throw new SnapshotExistsException(machine.Id, name);
            }

            if (existing.Count >= config.Daemon.MaxSnapshotsPerMachine)
            {
                throw new SnapshotLimitException(machine.Id, config.Daemon.MaxSnapshotsPerMachine);
            }

            var snapshot = await snapshots.CreateSnapshotAsync(name, token).ConfigureAwait(false);
            MachineLog.SnapshotTaken(logger, machine.Id, name);
            events.Publish(MachineEventTypes.SnapshotTaken, machine, detail: name);
            return snapshot;
        }, cancellationToken);

    internal Task<IReadOnlyList<SnapshotInfo>> ListSnapshotsAsync(Machine machine, CancellationToken cancellationToken) =>
        WithSnapshotsAsync(machine, "take snapshots", name: null, (snapshots, token) => snapshots.ListSnapshotsAsync(token), cancellationToken);

    internal Task<MachineView> RestoreSnapshotAsync(Machine machine, string name, CancellationToken cancellationToken) =>
        WithSnapshotsAsync(machine, "restore snapshots", name, async (snapshots, token) =>
        {
            await ThrowIfUnknownAsync(machine, snapshots, name, token).ConfigureAwait(false);
            await snapshots.RestoreSnapshotAsync(name, token).ConfigureAwait(false);
            transitions.Save(machine);
            MachineLog.SnapshotRestored(logger, machine.Id, name);
            events.Publish(MachineEventTypes.SnapshotRestored, machine, detail: name);
            return machine.View();
        }, cancellationToken);

    internal Task DeleteSnapshotAsync(Machine machine, string name, CancellationToken cancellationToken) =>
        WithSnapshotsAsync(machine, "delete snapshots", name, async (snapshots, token) =>
        {
            await ThrowIfUnknownAsync(machine, snapshots, name, token).ConfigureAwait(false);
            await snapshots.DeleteSnapshotAsync(name, token).ConfigureAwait(false);
            MachineLog.SnapshotDeleted(logger, machine.Id, name);
            events.Publish(MachineEventTypes.SnapshotDeleted, machine, detail: name);
            return true;
        }, cancellationToken);

    /// <summary>Whether the machine can be committed now; throws what the client is told otherwise.</summary>
    internal static ICommitSupport CommitSupport(Machine machine)
    {
        if (!machine.Manage)
        {
            throw new ManagementConflictException($"machine {machine.Id} is not a management machine: only those can be committed");
        }

        if (machine.Instance is not ICommitSupport commits)
        {
            throw new NotSupportedByBackendException(machine.Id, machine.Template.Type, "commit");
        }

        lock (machine.Sync)
        {
            MachineJobs.ThrowIfDeleting(machine);
            if (machine.State is MachineState.Booting or MachineState.Stopping)
            {
                throw new MachineStateConflictException(machine.Id, machine.State, "commit", $"machine {machine.Id} is {machine.State.ToWire()}: wait until it is running or stopped");
            }
        }

        return commits;
    }

    /// <summary>Publishes the (stopped) management machine's disk as its template's new image; the warm pools of that image go stale.</summary>
    internal Task<CommitResult> CommitAsync(Machine machine, CancellationToken cancellationToken)
    {
        var commits = CommitSupport(machine);
        return jobs.RunAsync(machine, JobKind.Commit, async token =>
        {
            var result = await commits.CommitAsync(token).ConfigureAwait(false);

            // Before the commit answers: no machine of the old image is handed out from a warm pool after it.
            pools.MakeStale(machine.Template);
            transitions.Save(machine);
            MachineLog.Committed(logger, machine.Id, machine.Template.Name, result.Version);
            events.Publish(MachineEventTypes.Committed, machine, detail: result.Version);
            return result;
        }, cancellationToken);
    }

    private static async Task ThrowIfUnknownAsync(Machine machine, ISnapshotSupport snapshots, string name, CancellationToken cancellationToken)
    {
        var existing = await snapshots.ListSnapshotsAsync(cancellationToken).ConfigureAwait(false);
        if (existing.All(s => s.Name != name))
        {
            throw new SnapshotNotFoundException(machine.Id, name);
        }
    }

    private Task<T> WithSnapshotsAsync<T>(Machine machine, string operation, string? name,
        Func<ISnapshotSupport, CancellationToken, Task<T>> action, CancellationToken cancellationToken)
    {
        if (name is not null && Names.Problem(name) is { } problem)
        {
            throw new InvalidRequestException("name", $"snapshot name {problem}");
        }

        if (machine.Instance is not ISnapshotSupport snapshots)
        {
            throw new NotSupportedByBackendException(machine.Id, machine.Template.Type, operation);
        }

        lock (machine.Sync)
        {
            MachineJobs.ThrowIfDeleting(machine);
            if (machine.State is MachineState.Booting or MachineState.Stopping or MachineState.Failed)
            {
                throw new MachineStateConflictException(machine.Id, machine.State, operation);
            }
        }

        return jobs.RunAsync(machine, JobKind.Snapshot, token => action(snapshots, token), cancellationToken);
    }
}
