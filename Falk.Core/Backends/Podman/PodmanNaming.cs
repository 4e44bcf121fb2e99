using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using Falk.Core.Machines;

namespace Falk.Core.Backends.Podman;

/// <summary>The labels Falk puts on every container and image it makes, so they can be found (and reaped) by label.</summary>
public static class PodmanLabels
{
    public const string Instance = "org.falk.instance";
    public const string Machine = "org.falk.machine";
    public const string Template = "org.falk.template";
    public const string Owner = "org.falk.owner";
    public const string Manage = "org.falk.manage";

    /// <summary>On images: <see cref="SnapshotKind"/> or <see cref="VersionKind"/>.</summary>
    public const string ImageKind = "org.falk.image-kind";
    public const string Snapshot = "org.falk.snapshot";
    public const string Version = "org.falk.version";

    /// <summary>A client's own labels (<c>POST /v1/machines {labels}</c>) are carried under this prefix.</summary>
    public const string ClientPrefix = "org.falk.label.";

    public const string SnapshotKind = "snapshot";
    public const string VersionKind = "version";

    public static Dictionary<string, string> Of(string instance, MachineSpec spec)
    {
        var labels = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [Instance] = instance,
            [Machine] = spec.MachineId,
            [Template] = spec.Template.Id,
            [Owner] = spec.OwnerUid.ToString(CultureInfo.InvariantCulture),
            [Manage] = spec.Manage ? "true" : "false",
        };
        foreach (var (key, value) in spec.Labels)
        {
            labels[ClientPrefix + key] = value;
        }

        return labels;
    }
}

/// <summary>
/// Image names Falk owns, under <c>localhost/falk/INSTANCE/</c> so that two daemons on one storage never meet
/// (INSTANCE is the daemon's <c>InstanceId</c>, a hash of its <c>state_dir</c>: unique on the host, unlike <c>name</c>,
/// and already lowercase hex, so a valid repository component):
/// <c>templates/TEMPLATE:current</c> (the template's image after a commit; a tag move is atomic and survives restarts),
/// <c>templates/TEMPLATE:vTIME</c> (each committed version) and <c>machines/ID:s-SNAPSHOT</c>.
/// </summary>
public sealed partial class PodmanNaming(string instance)
{
    public const string CurrentTag = "current";

    [GeneratedRegex("[^a-z0-9._-]+")]
    private static partial Regex NotAllowed();

    [GeneratedRegex("[._-]{2,}")]
    private static partial Regex SeparatorRun();

    private readonly string _root = "localhost/falk/" + Component(instance);

    public string Instance { get; } = instance;

    public string TemplateRepository(string template) => $"{_root}/templates/{Component(template)}";

    public string SnapshotRepository(string machineId) => $"{_root}/machines/{Component(machineId)}";

    /// <summary>Tags may hold letters, digits, '_', '.' and '-' but not start with '.' or '-'; snapshot names may.</summary>
    public static string SnapshotTag(string snapshot) => "s-" + snapshot;

    public static string NewVersion(DateTimeOffset now) => "v" + now.UtcDateTime.ToString("yyyyMMdd-HHmmss-fff", CultureInfo.InvariantCulture);

    /// <summary>
    /// A repository path component (lowercase letters and digits joined by single separators). A name that had to be
    /// changed gets a hash of the original, so two names never map to one component.
    /// </summary>
    public static string Component(string name)
    {
        var lowered = NotAllowed().Replace(name.ToLowerInvariant(), "-");
        lowered = SeparatorRun().Replace(lowered, "-").Trim('.', '_', '-');
        if (lowered == name && lowered.Length > 0)
        {
            return lowered;
        }

        var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(name)))[..8];
        return lowered.Length == 0 ? hash : $"{lowered}-{hash}";
    }
}
