using Falk.Core.Config;
using Falk.Core.Ssh;
using Falk.Core.State;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Machines;

/// <summary>
/// The machines across daemon restarts. At start, before the daemon accepts requests: takes back every recorded
/// machine that is still alive (keeping its id, port, lease and idempotency key), cleans up the rest, and removes what
/// this daemon made but never recorded. At stop, after the last request: the <c>on_shutdown</c> policy, destroying
/// every machine in parallel (<c>destroy</c>) or leaving them running, recorded, for the next start (<c>keep</c>).
/// </summary>
public sealed class MachineRecovery(FalkConfig config, IEnumerable<IMachineBackend> backends, MachineStore store, MachineTable table,
    Admission admission, MachineTransitions transitions, IdempotentCreates idempotency, MachineDestruction destruction,
    ILogger<MachineService> logger) : IHostedService
{
    private readonly Dictionary<string, IMachineBackend> _backends = backends.ToDictionary(b => b.Type, StringComparer.Ordinal);

    public Task StartAsync(CancellationToken cancellationToken) => RecoverAsync(cancellationToken);

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        var machines = table.All.ToList();
        if (config.Daemon.OnShutdown == ShutdownPolicy.Keep)
        {
            MachineLog.KeepingAll(logger, machines.Count);
            return;
        }

        if (machines.Count > 0)
        {
            MachineLog.DestroyingAll(logger, machines.Count);
        }

        // Not cut short by the host's shutdown timeout: a machine left half-destroyed helps nobody.
        await destruction.DestroyAllAsync(machines, CancellationToken.None).ConfigureAwait(false);
    }

    internal async Task RecoverAsync(CancellationToken cancellationToken)
    {
        // Machines whose record stays although they could not be taken back now: never swept as orphans.
        var keptRecords = new HashSet<string>(StringComparer.Ordinal);
        var records = store.All();
        foreach (var record in records)
        {
            // Records name the section id; those of older daemons its name.
            var template = config.Templates.FirstOrDefault(t => t.Id == record.Template && t.Type == record.Type)
                ?? config.Templates.FirstOrDefault(t => t.Name == record.Template && t.Type == record.Type);
            if (template is null || !_backends.TryGetValue(record.Type, out var backend))
            {
                MachineLog.CannotRecover(logger, record.Id, record.Template, record.Type);
                keptRecords.Add(record.Id);
                continue;
            }

            MachineState? recordedState = Enum.TryParse<MachineState>(record.State, ignoreCase: true, out var parsed) ? parsed : null;
            var spec = MachineSpecs.Of(config, record.Id, template, record.Manage, record.Port, record.OwnerUid, record.Labels);
            ReattachedMachine? reattached;
            try
            {
                reattached = await backend.ReattachAsync(spec, record.Handle, recordedState, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e) when (e is FalkException or IOException)
            {
                MachineLog.CleanupFailed(logger, record.Id, e);
                keptRecords.Add(record.Id);
                continue;
            }

            if (reattached is null)
            {
                MachineDestruction.RemoveWorkDirectory(record.WorkDirectory);
                store.Delete(record.Id);
                MachineLog.CleanedUpAfterRestart(logger, record.Id, record.State);
                continue;
            }

            TakeBack(record, template, reattached);
        }

        var known = table.Ids.Concat(keptRecords).ToHashSet(StringComparer.Ordinal);

        // Only backends this daemon uses (a template or a record of theirs) are swept: an engine nobody configured
        // (no LXD or Incus on the host, say) is not asked, and not warned about, at every start. The sweeps are
        // independent of each other (each its own processes, containers or instances): side by side, so a start waits
        // for the slowest, not the sum.
        var typesInUse = config.Templates.Select(t => t.Type).Concat(records.Select(r => r.Type)).ToHashSet(StringComparer.Ordinal);
        await Task.WhenAll(_backends.Values.Where(b => typesInUse.Contains(b.Type)).Select(b => b.RemoveOrphansAsync(known, cancellationToken)))
            .ConfigureAwait(false);

        var machinesFolder = MachineSpecs.MachinesFolder(config);
        if (Directory.Exists(machinesFolder))
        {
            foreach (var folder in Directory.EnumerateDirectories(machinesFolder).Where(f => !known.Contains(Path.GetFileName(f))))
            {
                MachineLog.OrphanRemoved(logger, Path.GetFileName(folder), folder);
                MachineDestruction.RemoveWorkDirectory(folder);
            }
        }
    }

    private void TakeBack(MachineRecord record, TemplateDefinition template, ReattachedMachine reattached)
    {
        var reservation = admission.Readmit(template, record.OwnerUid, record.Manage, record.Id, record.Port);
        var machine = new Machine(record.Id, template, record.Manage, record.OwnerUid, reservation, record.Labels, reattached.Instance,
            record.WorkDirectory, record.CreatedAt, record.LeaseExpiresAt, record.IdempotencyKey)
        {
            ObservedHostKey = record.ObservedHostKey is null ? null : HostKey.TryParse(record.ObservedHostKey, out _),
        };
        var state = reattached.Running ? MachineState.Running
            : record.State == MachineState.Prepared.ToWire() ? MachineState.Prepared
            : MachineState.Stopped;
        transitions.Restore(machine, state, record.LastError);
        transitions.FollowPauses(machine);
        table.Add(machine);
        idempotency.Remember(machine);
        if (reattached.Running && reattached.Instance.Exited is { } exited)
        {
            transitions.Watch(machine, exited);
        }

        MachineLog.Reattached(logger, record.Id, state.ToWire(), record.Port);
    }
}

/// <summary>Where a machine's files go, and what its backend is told about it.</summary>
internal static class MachineSpecs
{
    public static string MachinesFolder(FalkConfig config) => Path.Combine(config.Daemon.StateDirectory, "machines");

    public static string WorkDirectoryOf(FalkConfig config, string id) => Path.Combine(MachinesFolder(config), id);

    public static MachineSpec Of(FalkConfig config, string id, TemplateDefinition template, bool manage, int port, int owner, IReadOnlyDictionary<string, string> labels) =>
        new(id, template, manage, port, owner, labels, WorkDirectoryOf(config, id), config.Daemon.InstanceId)
        {
            ConsoleMaxBytes = config.Daemon.ConsoleMaxBytes,
        };
}
