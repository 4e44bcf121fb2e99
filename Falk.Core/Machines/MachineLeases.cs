using System.Globalization;
using Falk.Core.Config;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Machines;

/// <summary>Leases: how long a machine may live without a renewal, renewing them, and destroying the machines whose lease ran out.</summary>
public sealed class MachineLeases(FalkConfig config, MachineTable table, MachineDestruction destruction, MachineTransitions transitions,
    MachineEvents events, TimeProvider time, ILogger<MachineService> logger)
{
    /// <summary>A requested lease in seconds (null for the configured default), checked against max_lease_seconds.</summary>
    internal TimeSpan Duration(int? seconds)
    {
        var max = config.Daemon.MaxLeaseSeconds;
        return seconds switch
        {
            null => TimeSpan.FromSeconds(config.Daemon.DefaultLeaseSeconds),
            < 1 => throw new InvalidRequestException("lease_seconds", $"lease_seconds must be from 1 to {max}, not {seconds}"),
            _ when seconds > max => throw new InvalidRequestException("lease_seconds", $"lease_seconds must be from 1 to {max} (max_lease_seconds), not {seconds}"),
            _ => TimeSpan.FromSeconds(seconds.Value),
        };
    }

    /// <summary>Sets the machine's lease to end <paramref name="seconds"/> from now.</summary>
    internal MachineView Renew(Machine machine, int seconds)
    {
        var lease = Duration(seconds);
        DateTimeOffset expiresAt;
        lock (machine.Sync)
        {
            MachineJobs.ThrowIfDeleting(machine);
            var before = machine.LeaseExpiresAt;
            machine.LeaseExpiresAt = expiresAt = time.GetUtcNow() + lease;
            try
            {
                transitions.Save(machine);
            }
            catch
            {
                // Not recorded, not renewed: a restart would go by the record.
                machine.LeaseExpiresAt = before;
                throw;
            }

            machine.LeaseExpiryReported = false;
        }

        events.Publish(MachineEventTypes.LeaseRenewed, machine, detail: expiresAt.ToString("O", CultureInfo.InvariantCulture));
        return machine.View();
    }

    /// <summary>
    /// Begins destroying, through the same path as DELETE, every machine whose lease has run out, and returns the
    /// destroys begun without waiting for them, so that one slow delete holds up no other machine's expiry. Whether a
    /// lease is over is decided under the machine's lock (<see cref="MachineDestruction.TryBegin"/>): a renewal
    /// answered before that is honoured, one after it answers 404.
    /// </summary>
    public IReadOnlyList<Task> BeginExpired()
    {
        var now = time.GetUtcNow();
        var begun = new List<Task>();
        foreach (var machine in table.All)
        {
            if (destruction.TryBegin(machine, m => m.LeaseExpiresAt <= now) is not { } destroy)
            {
                continue;
            }

            if (!machine.LeaseExpiryReported)
            {
                machine.LeaseExpiryReported = true;
                MachineLog.LeaseExpired(logger, machine.Id, machine.View().LeaseExpiresAt);
                events.Publish(MachineEventTypes.LeaseExpired, machine);
            }

            begun.Add(destroy);
        }

        return begun;
    }

    /// <summary>Destroys every machine whose lease has run out and waits until they are gone (or failed). Returns how many.</summary>
    public async Task<int> DestroyExpiredAsync(CancellationToken cancellationToken)
    {
        var begun = BeginExpired();
        await Task.WhenAll(begun).WaitAsync(cancellationToken).ConfigureAwait(false);
        return begun.Count;
    }
}
