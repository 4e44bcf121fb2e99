using Falk.Core.Config;
using Falk.Core.Machines;
using Falk.Core.Unix;

namespace Falk.Api.Hosting;

/// <summary>
/// Who may use the daemon and who is an admin, from <c>allowed_*</c> and <c>admin_*</c> in <c>[falk]</c>.
/// Root and the daemon's own user are always admins.
/// </summary>
internal sealed class AccessPolicy
{
    private readonly HashSet<int> _allowedUsers;
    private readonly HashSet<int> _allowedGroups;
    private readonly HashSet<int> _adminUsers;
    private readonly HashSet<int> _adminGroups;
    private readonly bool _everyoneAllowed;

    private AccessPolicy(HashSet<int> allowedUsers, HashSet<int> allowedGroups, HashSet<int> adminUsers, HashSet<int> adminGroups)
    {
        _allowedUsers = allowedUsers;
        _allowedGroups = allowedGroups;
        _adminUsers = adminUsers;
        _adminGroups = adminGroups;
        _everyoneAllowed = allowedUsers.Count == 0 && allowedGroups.Count == 0;
        _adminUsers.Add(0);
        _adminUsers.Add((int)UnixAccounts.EffectiveUid);
    }

    /// <summary>Resolves the names in the config; an unknown user or group is a config error.</summary>
    public static AccessPolicy Create(FalkConfig config)
    {
        var errors = new List<string>();
        HashSet<int> Resolve(IReadOnlyList<string> names, string key, Func<string, int?> resolve, string kind)
        {
            var ids = new HashSet<int>();
            foreach (var name in names)
            {
                if (resolve(name) is { } id)
                {
                    ids.Add(id);
                }
                else
                {
                    errors.Add($"{config.Path}: [{ConfigLoader.DaemonSection}] {key}: no {kind} named '{name}'");
                }
            }

            return ids;
        }

        var daemon = config.Daemon;
        var policy = new AccessPolicy(
            Resolve(daemon.AllowedUsers, "allowed_users", UnixAccounts.ResolveUser, "user"),
            Resolve(daemon.AllowedGroups, "allowed_groups", UnixAccounts.ResolveGroup, "group"),
            Resolve(daemon.AdminUsers, "admin_users", UnixAccounts.ResolveUser, "user"),
            Resolve(daemon.AdminGroups, "admin_groups", UnixAccounts.ResolveGroup, "group"));
        if (daemon.ControlSocketGroup is { } group && UnixAccounts.ResolveGroup(group) is null)
        {
            errors.Add($"{config.Path}: [{ConfigLoader.DaemonSection}] control_socket_group: no group named '{group}'");
        }

        return errors.Count > 0 ? throw new ConfigException(errors) : policy;
    }

    /// <summary>The caller for a peer, or null when the peer may not use the daemon.</summary>
    public Caller? Authorize(PeerIdentity peer)
    {
        var groups = new HashSet<int>(peer.Groups) { peer.Gid };
        var isAdmin = _adminUsers.Contains(peer.Uid) || groups.Overlaps(_adminGroups);
        var allowed = isAdmin || _everyoneAllowed || _allowedUsers.Contains(peer.Uid) || groups.Overlaps(_allowedGroups);
        return allowed ? new Caller(peer.Uid, isAdmin) : null;
    }
}

/// <summary>Turns the connection's <see cref="PeerIdentity"/> into a <see cref="Caller"/> for every request, or refuses with 403.</summary>
internal static class PeerAccess
{
    private static readonly object CallerKey = new();

    public static IApplicationBuilder UsePeerAccess(this IApplicationBuilder app) => app.Use(async (context, next) =>
    {
        if (context.Features.Get<PeerLimitException>() is { } refusal)
        {
            // A connection over its uid's max_connections_per_uid: answered, then closed.
            context.Response.Headers.Connection = "close";
            throw refusal;
        }

        var policy = context.RequestServices.GetRequiredService<AccessPolicy>();
        var peer = PeerIdentity.Of(context.Features);
        var caller = peer is null ? null : policy.Authorize(peer);
        if (caller is null)
        {
            var logger = context.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(PeerAccess));
            ApiLog.PeerRefused(logger, peer?.Uid ?? -1, peer?.Pid ?? -1);
            throw new AccessDeniedException(peer is null
                ? "the peer's credentials could not be read"
                : $"uid {peer.Uid} is not an allowed user or in an allowed group");
        }

        context.Items[CallerKey] = caller;
        await next(context).ConfigureAwait(false);
    });

    /// <summary>The caller of the current request (set by <see cref="UsePeerAccess"/>).</summary>
    public static Caller Caller(this HttpContext context) =>
        context.Items[CallerKey] as Caller ?? throw new InvalidOperationException("peer access middleware did not run");
}

/// <summary>
/// How many connections each uid holds open on the control socket (HTTP and the control protocol alike), counted from
/// accept to close: at most <c>max_connections_per_uid</c> for a uid that is not an admin, so one local user cannot
/// use up the daemon's file descriptors; admins and other uids are not affected.
/// </summary>
internal sealed class ConnectionLimits(FalkConfig config)
{
    private readonly PerUidSlots _slots = new(config.Daemon.MaxConnectionsPerUid);

    /// <summary>The connection's slot (nothing to hold for admins and refused peers), or null when its uid has no room.</summary>
    public IDisposable? TryEnter(Caller? caller) =>
        caller is null || caller.IsAdmin ? PerUidSlots.Uncounted : _slots.TryTake(caller.Uid);

    public PeerLimitException Refusal(Caller caller) => new("too-many-connections",
        $"uid {caller.Uid} already has {_slots.Limit} connections open to falkd (max_connections_per_uid): close one first", _slots.Limit);
}
