namespace Falk.Core.Machines;

/// <summary>
/// At most <c>limit</c> things held at once per uid (connections, event streams): one uid that opens too many is
/// refused, and every other uid is unaffected. A slot is given back exactly once, when disposed.
/// </summary>
public sealed class PerUidSlots(int limit)
{
    private readonly Dictionary<int, int> _held = [];
    private readonly Lock _lock = new();

    public int Limit => limit;

    /// <summary>What is held by those not counted (admins): nothing to give back.</summary>
    public static IDisposable Uncounted { get; } = new UncountedSlot();

    /// <summary>A slot for <paramref name="uid"/>, or null when it holds <see cref="Limit"/> already.</summary>
    public IDisposable? TryTake(int uid)
    {
        lock (_lock)
        {
            var held = _held.GetValueOrDefault(uid);
            if (held >= limit)
            {
                return null;
            }

            _held[uid] = held + 1;
        }

        return new Slot(this, uid);
    }

    private void Give(int uid)
    {
        lock (_lock)
        {
            if (--_held[uid] == 0)
            {
                _held.Remove(uid);
            }
        }
    }

    private sealed class Slot(PerUidSlots owner, int uid) : IDisposable
    {
        private int _given;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _given, 1) == 0)
            {
                owner.Give(uid);
            }
        }
    }

    private sealed class UncountedSlot : IDisposable
    {
        public void Dispose()
        {
            // Nothing is held.
        }
    }
}
