using Falk.Core.Machines;

namespace Falk.Api.Contracts;

/// <summary>Body of <c>POST /v1/machines/{id}/snapshots</c>.</summary>
/// <param name="Name">Name of the snapshot, <c>[A-Za-z0-9._-]</c>, unique per machine.</param>
public sealed record CreateSnapshotBody(string? Name);

/// <summary>A point-in-time snapshot of a machine.</summary>
/// <param name="IncludesMemory">True for a live snapshot holding the running guest's memory too.</param>
public sealed record SnapshotResponse(string Name, DateTimeOffset CreatedAt, long? SizeBytes, bool IncludesMemory)
{
    public static SnapshotResponse From(SnapshotInfo s) => new(s.Name, s.CreatedAt, s.SizeBytes, s.IncludesMemory);
}

/// <summary>Answer of <c>POST /v1/machines/{id}/commit</c>.</summary>
/// <param name="Version">The template's new current image version.</param>
public sealed record CommitResponse(string MachineId, string Template, string Version);

/// <summary>Body of <c>POST /v1/machines/{id}/commit</c>.</summary>
/// <param name="TimeoutSeconds">How long a running guest may take to shut down before it is forced off (default 30).</param>
public sealed record CommitMachineBody(int? TimeoutSeconds);
