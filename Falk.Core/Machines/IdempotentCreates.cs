using System.Collections.Concurrent;

namespace Falk.Core.Machines;

/// <summary>
/// Creates made with a client's Idempotency-Key: concurrent and later retries of the same key by the same owner get
/// the same machine while it exists. A key is forgotten when its machine is destroyed (or its create failed), so a
/// client that uses a fresh key per job leaves nothing behind.
/// </summary>
public sealed class IdempotentCreates
{
    private readonly ConcurrentDictionary<(int Owner, string Key), Lazy<Task<MachineView>>> _creates = new();

    internal int Count => _creates.Count;

    internal static void Validate(string key)
    {
        if (key.Length is 0 or > 128 || key.Any(char.IsControl))
        {
            throw new InvalidRequestException("Idempotency-Key", "the Idempotency-Key header must be 1-128 printable characters");
        }
    }

    /// <summary>The machine made under the key, or a new one from <paramref name="create"/>.</summary>
    /// <param name="create">Makes the machine; it must not depend on the caller's token, so that it finishes (and
    /// stays under the key) when the client that started it goes away before the answer.</param>
    /// <param name="current">The machine's view now, or null when it is gone.</param>
    internal async Task<MachineView> GetOrCreateAsync(Caller caller, string key, Func<Task<MachineView>> create,
        Func<string, MachineView?> current, CancellationToken cancellationToken)
    {
        Validate(key);
        var slot = (caller.Uid, key);
        while (true)
        {
            Lazy<Task<MachineView>>? attempt = null;
            attempt = new Lazy<Task<MachineView>>(() => CreateOrForgetAsync(slot, attempt!, create));
            var winner = _creates.GetOrAdd(slot, attempt);
            MachineView made;
            try
            {
                // Only this request's wait ends with its token: the create goes on, and a retry finds it.
                made = await winner.Value.WaitAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (Exception) when (!ReferenceEquals(winner, attempt) && !cancellationToken.IsCancellationRequested)
            {
                // Another request's create under this key failed (and freed the key): try afresh.
                continue;
            }

            if (current(made.Id) is { } view)
            {
                return view;
            }

            // The machine made under this key is gone: the key is free again.
            _creates.TryRemove(new KeyValuePair<(int, string), Lazy<Task<MachineView>>>(slot, winner));
        }
    }

    /// <summary>Runs the create; a create that fails frees its key before anyone sees the failure.</summary>
    private async Task<MachineView> CreateOrForgetAsync((int Owner, string Key) slot, Lazy<Task<MachineView>> entry, Func<Task<MachineView>> create)
    {
        try
        {
            return await create().ConfigureAwait(false);
        }
        catch
        {
            _creates.TryRemove(new KeyValuePair<(int, string), Lazy<Task<MachineView>>>(slot, entry));
            throw;
        }
    }

    /// <summary>After a restart: the key of a machine taken back gets it again.</summary>
    internal void Remember(Machine machine)
    {
        if (machine.IdempotencyKey is { } key)
        {
            _creates[(machine.OwnerUid, key)] = new Lazy<Task<MachineView>>(Task.FromResult(machine.View()));
        }
    }

    /// <summary>The machine is destroyed: its key no longer names it.</summary>
    internal void Forget(Machine machine)
    {
        if (machine.IdempotencyKey is { } key
            && _creates.TryGetValue((machine.OwnerUid, key), out var entry)
            && entry.IsValueCreated && entry.Value.IsCompletedSuccessfully && entry.Value.Result.Id == machine.Id)
        {
            _creates.TryRemove(new KeyValuePair<(int, string), Lazy<Task<MachineView>>>((machine.OwnerUid, key), entry));
        }
    }
}
