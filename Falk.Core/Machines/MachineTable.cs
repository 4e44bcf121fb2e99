using System.Collections.Concurrent;

namespace Falk.Core.Machines;

/// <summary>The machines the daemon holds, by id, and who may see which: its owner, and admins.</summary>
public sealed class MachineTable
{
    private readonly ConcurrentDictionary<string, Machine> _machines = new(StringComparer.Ordinal);

    internal IReadOnlyCollection<Machine> All => (IReadOnlyCollection<Machine>)_machines.Values;

    internal IReadOnlyCollection<string> Ids => (IReadOnlyCollection<string>)_machines.Keys;

    internal void Add(Machine machine) => _machines[machine.Id] = machine;

    internal void Remove(Machine machine) => _machines.TryRemove(new KeyValuePair<string, Machine>(machine.Id, machine));

    internal bool Contains(string id) => _machines.ContainsKey(id);

    /// <summary>The caller's machine; a machine it may not see is as unknown as one that does not exist.</summary>
    internal Machine Find(string id, Caller caller)
    {
        if (Names.Problem(id) is { } problem)
        {
            throw new InvalidRequestException("id", $"machine id {problem}");
        }

        return TryFind(id, caller) ?? throw new MachineNotFoundException(id);
    }

    internal Machine? TryFind(string id, Caller caller) =>
        _machines.TryGetValue(id, out var machine) && CanSee(caller, machine) ? machine : null;

    internal IReadOnlyList<MachineView> List(Caller caller) =>
        _machines.Values
            .Where(m => CanSee(caller, m))
            .Select(m => m.View())
            .OrderBy(m => m.CreatedAt)
            .ToList();

    private static bool CanSee(Caller caller, Machine machine) => caller.IsAdmin || machine.OwnerUid == caller.Uid;
}
