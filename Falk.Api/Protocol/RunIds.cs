using System.Collections.Concurrent;

namespace Falk.Api.Protocol;

/// <summary>A protocol run id: the machine it stands for now, the uid it belongs to, and the section or name it was selected by.</summary>
internal sealed record RunHandle(long RunId, int OwnerUid, string MachineId, string Template, bool Manage);

/// <summary>
/// The daemon-wide run ids of the control protocol: counted from 0, never reused. Unlike the original, where any
/// connection could use any run id, a run id belongs to the uid whose connection made it.
/// </summary>
internal sealed class RunIds
{
    private readonly ConcurrentDictionary<long, RunHandle> _handles = new();
    private long _next = -1;

    public long Next() => Interlocked.Increment(ref _next);

    public void Set(RunHandle handle) => _handles[handle.RunId] = handle;

    /// <summary>The handle of <paramref name="runId"/> if it exists and belongs to <paramref name="uid"/>.</summary>
    public RunHandle? Find(long runId, int uid) =>
        _handles.TryGetValue(runId, out var handle) && handle.OwnerUid == uid ? handle : null;

    public void Remove(long runId) => _handles.TryRemove(runId, out _);
}
