using System.Runtime.CompilerServices;
using System.Threading.Channels;

namespace Falk.Core.Machines;

/// <summary>Kinds of machine events, as they appear on the wire.</summary>
public static class MachineEventTypes
{
    public const string Created = "created";

    /// <summary>A machine joined its template's warm pool, booted and verified (admins only: the daemon owns it).</summary>
    public const string Pooled = "pooled";
    public const string Booting = "booting";
    public const string Running = "running";
    public const string Paused = "paused";
    public const string Ready = "ready";
    public const string Stopping = "stopping";
    public const string Stopped = "stopped";
    public const string Failed = "failed";
    public const string Destroyed = "destroyed";
    public const string LeaseRenewed = "lease_renewed";
    public const string LeaseExpired = "lease_expired";
    public const string Committed = "committed";
    public const string SnapshotTaken = "snapshot_taken";
    public const string SnapshotRestored = "snapshot_restored";
    public const string SnapshotDeleted = "snapshot_deleted";
    public const string Resumed = "resumed";
    public const string ResumeFailed = "resume_failed";
}

/// <summary>Something that happened to a machine. <see cref="Id"/> grows by one per event; clients resume from it.</summary>
public sealed record MachineEvent(long Id, DateTimeOffset Time, string Type, string MachineId, string Template, int OwnerUid, string? State, string? Detail);

/// <summary>
/// The stream of machine events: every subscriber gets each event once, in order; a bounded window of recent
/// events lets a client that reconnects (SSE <c>Last-Event-ID</c>) get what it missed.
/// </summary>
public sealed class MachineEvents(TimeProvider time)
{
    public const int RecentWindow = 1024;
    private const int SubscriberBuffer = 1024;

    private readonly Queue<MachineEvent> _recent = new();
    private readonly List<Channel<MachineEvent>> _subscribers = [];
    private readonly Lock _lock = new();
    private long _lastId;

    public MachineEvent Publish(string type, Machine machine, MachineState? state = null, string? detail = null)
    {
        lock (_lock)
        {
            var item = new MachineEvent(++_lastId, time.GetUtcNow(), type, machine.Id, machine.Template.Name, machine.OwnerUid, state?.ToWire(), detail);
            _recent.Enqueue(item);
            if (_recent.Count > RecentWindow)
            {
                _recent.Dequeue();
            }

            foreach (var subscriber in _subscribers)
            {
                // A subscriber that does not keep up loses its oldest events rather than stalling the daemon;
                // it can reconnect with the last id it saw.
                subscriber.Writer.TryWrite(item);
            }

            return item;
        }
    }

    /// <summary>Events after <paramref name="afterId"/> still in the window, then every new one, until cancelled.</summary>
    public async IAsyncEnumerable<MachineEvent> SubscribeAsync(long? afterId, Func<MachineEvent, bool> visible, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var channel = Channel.CreateBounded<MachineEvent>(new BoundedChannelOptions(SubscriberBuffer)
        {
            FullMode = BoundedChannelFullMode.DropOldest,
            SingleReader = true,
        });
        List<MachineEvent> missed;
        lock (_lock)
        {
            missed = afterId is { } after ? _recent.Where(e => e.Id > after).ToList() : [];
            _subscribers.Add(channel);
        }

        try
        {
            var lastSent = afterId ?? 0;
            foreach (var item in missed.Where(visible))
            {
                lastSent = item.Id;
                yield return item;
            }

            await foreach (var item in channel.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                if (item.Id > lastSent && visible(item))
                {
                    lastSent = item.Id;
                    yield return item;
                }
            }
        }
        finally
        {
            lock (_lock)
            {
                _subscribers.Remove(channel);
            }
        }
    }
}
