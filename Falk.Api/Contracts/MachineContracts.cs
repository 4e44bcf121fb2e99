using Falk.Core.Machines;

namespace Falk.Api.Contracts;

/// <summary>Body of <c>POST /v1/machines</c>.</summary>
/// <param name="Template">Name of the template to make the machine from.</param>
/// <param name="Manage">Management mode: changes can be committed as the template's new image (admins only).</param>
/// <param name="Labels">Free-form labels, e.g. the CI job; keys <c>[A-Za-z0-9._/-]</c>.</param>
/// <param name="LeaseSeconds">How long the machine lives without a renewal (default and maximum from the config).</param>
public sealed record CreateMachineBody(string? Template, bool? Manage, Dictionary<string, string>? Labels, int? LeaseSeconds);

/// <summary>Body of <c>PUT /v1/machines/{id}/lease</c>.</summary>
/// <param name="Seconds">The lease now ends this many seconds from now.</param>
public sealed record RenewLeaseBody(int? Seconds);

/// <summary>Body of <c>POST /v1/machines/{id}/stop</c>.</summary>
/// <param name="TimeoutSeconds">How long the guest may take to shut down before it is forced off (default 30).</param>
public sealed record StopMachineBody(int? TimeoutSeconds);

/// <summary>A machine.</summary>
/// <param name="State">
/// prepared, booting, running, paused, stopping, stopped or failed. <c>paused</c> is a launched machine whose guest was
/// paused outside Falk (a QEMU monitor's <c>stop</c>); it is <c>running</c> again once resumed, and stop, delete and
/// snapshots work on it as on a running one.
/// </param>
public sealed record MachineResponse(
    string Id,
    string Template,
    string State,
    bool Manage,
    int OwnerUid,
    DateTimeOffset CreatedAt,
    DateTimeOffset StateChangedAt,
    DateTimeOffset LeaseExpiresAt,
    IReadOnlyDictionary<string, string> Labels,
    SshResponse Ssh,
    string? LastError)
{
    public static MachineResponse From(MachineView m) =>
        new(m.Id, m.Template, m.State.ToWire(), m.Manage, m.OwnerUid, m.CreatedAt, m.StateChangedAt, m.LeaseExpiresAt, m.Labels, SshResponse.From(m.Ssh), m.LastError);
}

/// <summary>How to log in to a machine, ready for a known_hosts file.</summary>
/// <param name="KnownHostKey">The host key to trust (<c>TYPE BASE64</c>), or null before one is known.</param>
/// <param name="KnownHostKeyVerified">True when the key is pinned and readiness checked it; false when it is only what the server showed.</param>
/// <param name="HostKeySource"><c>config</c>, <c>machine</c>, <c>image</c>, <c>observed</c> (unverified) or <c>none</c>.</param>
/// <param name="Host">The literal address to connect to (never a name a client could resolve to another address).</param>
/// <param name="KnownHostsLine">The line to put into known_hosts for this host and port.</param>
public sealed record SshResponse(
    string User,
    string Host,
    int Port,
    string? KnownHostKey,
    string? Fingerprint,
    bool KnownHostKeyVerified,
    HostKeySource HostKeySource,
    string? KnownHostsLine)
{
    public static SshResponse From(SshAccess s) => new(
        s.User,
        s.Host,
        s.Port,
        s.KnownHostKey?.PublicKeyLine,
        s.KnownHostKey?.FingerprintSha256,
        s.Verified,
        HostKeySourceWire.FromCore(s.Source),
        s.KnownHostKey?.KnownHostsLine(s.Host, s.Port));
}
