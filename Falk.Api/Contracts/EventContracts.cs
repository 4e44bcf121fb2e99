using Falk.Core.Machines;

namespace Falk.Api.Contracts;

/// <summary>One server-sent event of <c>GET /v1/events</c>: the SSE <c>id</c> is <see cref="Id"/>, the SSE <c>event</c> is <see cref="Type"/>.</summary>
/// <param name="Type">created (detail <c>warm pool</c> when a create took a pooled machine), pooled (a machine joined its template's warm pool; admins only), booting, running, paused, ready, stopping, stopped, failed, destroyed, lease_renewed, lease_expired, committed, snapshot_taken, snapshot_restored, snapshot_deleted, resumed, resume_failed (a QEMU machine of a <c>boot = resume</c> template started from its saved guest, or booted cold because that failed; the detail says why).</param>
public sealed record MachineEventResponse(long Id, DateTimeOffset Time, string Type, string MachineId, string Template, int OwnerUid, string? State, string? Detail)
{
    public static MachineEventResponse From(MachineEvent e) => new(e.Id, e.Time, e.Type, e.MachineId, e.Template, e.OwnerUid, e.State, e.Detail);
}
