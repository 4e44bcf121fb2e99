using Falk.Core.Ssh;

namespace Falk.Core.Config;

/// <summary>The whole of a loaded and validated falk.conf.</summary>
public sealed record FalkConfig(
    string Path,
    DaemonOptions Daemon,
    IReadOnlyList<TemplateDefinition> Templates,
    IReadOnlyList<string> Warnings);

/// <summary>The <c>[falk]</c> section.</summary>
public sealed record DaemonOptions
{
    public const string DefaultConfigPath = "/etc/falk/falk.conf";

    /// <summary>The era of a config whose daemon section is <c>[justin]</c> (falk's later name).</summary>
    public const string JustinEra = "justin";

    /// <summary>
    /// The name the daemon section had (<c>falk</c>, or <c>justin</c> after the rename): the control protocol answers
    /// Status with that era's class name.
    /// </summary>
    public string ProtocolEra { get; init; } = "falk";

    public string Name { get; init; } = "falk";

    public string ControlSocket { get; init; } = "/run/falk/falk.sock";

    /// <summary>Where Falk keeps what it makes per machine (sockets, console logs, overlays) and its own state.</summary>
    public string StateDirectory { get; init; } = "/var/lib/falk";

    public UnixFileMode ControlSocketPermissions { get; init; } =
        UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite;

    /// <summary>Group name or numeric gid given to the socket, or null to keep the daemon's.</summary>
    public string? ControlSocketGroup { get; init; }

    public PortRange VmPorts { get; init; } = new(7888, 8000);

    /// <summary>Machines alive at once, over all templates.</summary>
    public int MaxMachines { get; init; }

    /// <summary>
    /// Machines one uid may have at once, admins included. When the config sets none, uids that are not admins may
    /// have <see cref="DefaultMaxMachinesPerOwner"/> and admins are not limited beyond <see cref="MaxMachines"/>.
    /// </summary>
    public int? MaxMachinesPerOwner { get; init; }

    /// <summary>The per-owner limit of non-admins when the config sets none: three quarters of <see cref="MaxMachines"/>
    /// (at least 1), so that one uid leaves room for others.</summary>
    public int DefaultMaxMachinesPerOwner => Math.Max(1, MaxMachines * 3 / 4);

    /// <summary>Snapshots one machine may have at once.</summary>
    public int MaxSnapshotsPerMachine { get; init; } = 16;

    /// <summary>Connections to the control socket one uid (not an admin) may hold open at once.</summary>
    public int MaxConnectionsPerUid { get; init; } = 64;

    /// <summary>Event streams (GET /v1/events) one uid (not an admin) may follow at once.</summary>
    public int MaxEventStreamsPerUid { get; init; } = 8;

    /// <summary>Default of <see cref="ConsoleMaxBytes"/>: 16 MiB.</summary>
    public const long DefaultConsoleMaxBytes = 16L * 1024 * 1024;

    /// <summary>The most one machine's console log (the part Falk writes) takes on disk; the newest output is kept.</summary>
    public long ConsoleMaxBytes { get; init; } = DefaultConsoleMaxBytes;

    /// <summary>Lease of a machine whose create names none.</summary>
    public int DefaultLeaseSeconds { get; init; } = 3600;

    /// <summary>The longest lease a create or renewal may ask for.</summary>
    public int MaxLeaseSeconds { get; init; } = 86400;

    /// <summary>User names or uids allowed to connect; empty means everyone who can open the socket.</summary>
    public IReadOnlyList<string> AllowedUsers { get; init; } = [];

    public IReadOnlyList<string> AllowedGroups { get; init; } = [];

    /// <summary>Users who see every machine and may use management mode (root and the daemon's own user always may).</summary>
    public IReadOnlyList<string> AdminUsers { get; init; } = [];

    public IReadOnlyList<string> AdminGroups { get; init; } = [];

    /// <summary>What each backend read of this section (<see cref="BackendDescriptor.ParseDaemonOptions"/>), by backend type.</summary>
    public IReadOnlyDictionary<string, object> BackendOptions { get; init; } = new Dictionary<string, object>();

    /// <summary>On SIGTERM, leave machines running for the next start to reattach (keep) or destroy them.</summary>
    public ShutdownPolicy OnShutdown { get; init; } = ShutdownPolicy.Keep;

    /// <summary>
    /// Tells this daemon's machines apart from those of another daemon on the same host: derived from the
    /// state folder, which no two daemons share.
    /// </summary>
    public string InstanceId => Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(StateDirectory)))[..12];
}

public enum ShutdownPolicy
{
    Keep,
    Destroy,
}

/// <summary>An inclusive range of TCP ports.</summary>
public sealed record PortRange(int First, int Last)
{
    public int Count => Last - First + 1;

    public bool Contains(int port) => port >= First && port <= Last;

    public override string ToString() => $"[{First},{Last}]";
}

/// <summary>One machine kind ("template"): a config section other than <c>[falk]</c>.</summary>
public sealed record TemplateDefinition
{
    /// <summary>The section id.</summary>
    public required string Id { get; init; }

    /// <summary>What a job asks for; defaults to the id.</summary>
    public required string Name { get; init; }

    public required string Type { get; init; }

    public required string SshUser { get; init; }

    /// <summary>
    /// The literal address machines answer SSH on and are handed out with: the config's <c>ssh_host</c> resolved once,
    /// at load (<c>localhost</c> is 127.0.0.1); or a backend's dynamic marker (LXD's <c>__dynamic__</c>).
    /// </summary>
    public string SshHost { get; init; } = "127.0.0.1";

    /// <summary>Machines of this template alive at once; null for no limit of its own.</summary>
    public int? MaxMachines { get; init; }

    /// <summary>
    /// Machines of this template Falk keeps booted and SSH-verified, owned by itself, for creates to take at once
    /// (its warm pool); 0 for none.
    /// </summary>
    public int PoolSize { get; init; }

    /// <summary>A fixed SSH port; null means one is taken from <c>vm_ports</c> per machine.</summary>
    public int? SshPort { get; init; }

    /// <summary>Pinned host keys; empty means the key is not verified.</summary>
    public IReadOnlyList<HostKey> KnownHostKeys { get; init; } = [];

    public bool ManageSupported { get; init; }

    /// <summary>The backend's own options, parsed by its <see cref="BackendDescriptor"/>.</summary>
    public required object BackendOptions { get; init; }
}
