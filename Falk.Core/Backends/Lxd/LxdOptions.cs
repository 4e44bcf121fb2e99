using System.Text.RegularExpressions;
using Falk.Core.Config;
using Falk.Core.Processes;

namespace Falk.Core.Backends.Lxd;

/// <summary>
/// LXD or Incus (its fork, same REST API): one backend, two <c>type =</c> values, each with its own socket key and default.
/// </summary>
/// <param name="DaemonCommand">What an operator starts when the API is down (named in the 503).</param>
public sealed record LxdFlavor(string Type, string Product, string SocketKey, string DefaultSocket, string DaemonCommand)
{
    public static LxdFlavor Lxd { get; } = new("lxd", "LXD", "lxd_socket", "/var/lib/lxd/unix.socket", "lxd");

    public static LxdFlavor Incus { get; } = new("incus", "Incus", "incus_socket", "/var/lib/incus/unix.socket", "incusd");

    /// <summary>The instance config key that marks what Falk made, so it can be found and reaped (<c>user.</c> keys are free for users).</summary>
    public const string ConfigPrefix = "user.falk.";

    public BackendDescriptor Descriptor => new(Type, reader => LxdTemplateOptions.Parse(reader, this), SupportsManage: true,
        reader => LxdDaemonOptions.Parse(reader, this), PinnedKeySource: _ => Machines.HostKeySources.Image, DynamicSshHost: LxdBackend.DynamicHost);
}

/// <summary>The backend's key of <c>[falk]</c>: where the daemon's API socket is (<c>lxd_socket</c> or <c>incus_socket</c>).</summary>
public sealed record LxdDaemonOptions(string SocketPath)
{
    /// <summary><c>unix:///PATH</c> or a plain path (relative to the config file).</summary>
    internal static LxdDaemonOptions Parse(SectionReader reader, LxdFlavor flavor)
    {
        var text = reader.Text(flavor.SocketKey);
        if (text is null)
        {
            return new LxdDaemonOptions(flavor.DefaultSocket);
        }

        if (text.StartsWith("unix://", StringComparison.Ordinal))
        {
            text = text["unix://".Length..];
        }

        if (text.Length == 0 || text.Contains("://", StringComparison.Ordinal))
        {
            reader.Error(flavor.SocketKey, $"'{text}' is not a Unix socket (write unix:///PATH or a path)");
            return new LxdDaemonOptions(flavor.DefaultSocket);
        }

        return new LxdDaemonOptions(Path.GetFullPath(text, reader.ConfigDirectory));
    }
}

/// <summary>
/// A <c>type = lxd</c> (or <c>incus</c>) template. What the original's <c>command</c> line (<c>lxc launch …</c>, now ignored)
/// expressed has keys of its own: <c>profiles</c>, <c>memory</c>, <c>cpus</c>, <c>storage_pool</c>, <c>config</c> and <c>vm</c>.
/// </summary>
/// <param name="BaseImage">An image alias or fingerprint in the daemon's image store; machines start from it until a commit.</param>
/// <param name="Config">Instance config keys (<c>limits.memory</c>, <c>security.nesting</c> …) set on every machine.</param>
/// <param name="IgnoredCommand">The original's <c>command</c> line, when one is configured: logged once as ignored.</param>
public sealed partial record LxdTemplateOptions(
    string BaseImage,
    IReadOnlyList<string> Profiles,
    IReadOnlyDictionary<string, string> Config,
    string? StoragePool,
    bool VirtualMachine,
    string? IgnoredCommand)
{
    /// <summary>The device a host needs for LXD virtual machines (the agent talks over vsock).</summary>
    public const string VsockDevice = "/dev/vhost-vsock";

    [GeneratedRegex(@"^\d+(?:\.\d+)?\s*(?:[kMGTPE]i?B|B|%)?$")]
    private static partial Regex MemoryPattern();

    [GeneratedRegex(@"^(?:\d+|\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*)$")]
    private static partial Regex CpusPattern();

    [GeneratedRegex(@"^[a-z][A-Za-z0-9_.-]*$")]
    private static partial Regex ConfigKeyPattern();

    [GeneratedRegex(@"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    private static partial Regex NamePattern();

    internal static LxdTemplateOptions? Parse(SectionReader reader, LxdFlavor flavor)
    {
        var errors = reader.ErrorCount;
        var baseImage = reader.Required("base_image");
        var command = reader.Text("command");
        var config = ReadConfig(reader);
        var profiles = ReadNames(reader, "profiles") ?? ["default"];
        var pool = ReadNames(reader, "storage_pool") is { } pools ? pools.FirstOrDefault() : null;
        if (reader.Text("memory") is { } memory)
        {
            if (MemoryPattern().IsMatch(memory))
            {
                config["limits.memory"] = memory.Replace(" ", string.Empty, StringComparison.Ordinal);
            }
            else
            {
                reader.Error("memory", $"'{memory}' is not a size as LXD writes it (512MiB, 2GiB, 50%)");
            }
        }

        if (reader.Text("cpus") is { } cpus)
        {
            if (CpusPattern().IsMatch(cpus))
            {
                config["limits.cpu"] = cpus;
            }
            else
            {
                reader.Error("cpus", $"'{cpus}' is not a number of CPUs (2) or a CPU set (0-1,3)");
            }
        }

        var vm = reader.Bool("vm") ?? false;
        if (vm && !File.Exists(VsockDevice))
        {
            reader.Error("vm", $"this host cannot run {flavor.Product} virtual machines: {VsockDevice} is missing (load the vhost_vsock kernel module, or use containers)");
        }

        return baseImage is null || reader.ErrorCount > errors
            ? null
            : new LxdTemplateOptions(baseImage, profiles, config, pool, vm, command);
    }

    /// <summary><c>KEY=VALUE</c> items separated by spaces (quote values with spaces as a shell would).</summary>
    private static Dictionary<string, string> ReadConfig(SectionReader reader)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var item in Words(reader, "config"))
        {
            var split = item.IndexOf('=', StringComparison.Ordinal);
            var key = split > 0 ? item[..split] : item;
            if (split <= 0 || !ConfigKeyPattern().IsMatch(key))
            {
                reader.Error("config", $"'{item}' is not KEY=VALUE with an instance config key such as limits.memory or security.nesting");
                continue;
            }

            if (key.StartsWith(LxdFlavor.ConfigPrefix, StringComparison.Ordinal))
            {
                reader.Error("config", $"'{key}': keys under {LxdFlavor.ConfigPrefix} are Falk's own marks");
                continue;
            }

            result[key] = item[(split + 1)..];
        }

        return result;
    }

    private static List<string>? ReadNames(SectionReader reader, string key)
    {
        if (!reader.Has(key))
        {
            return null;
        }

        var names = Words(reader, key).SelectMany(w => w.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToList();
        foreach (var bad in names.Where(n => !NamePattern().IsMatch(n)))
        {
            reader.Error(key, $"'{bad}' is not a name of letters, digits, '.', '_' and '-'");
        }

        return names;
    }

    private static IReadOnlyList<string> Words(SectionReader reader, string key)
    {
        var text = reader.Text(key);
        if (text is null)
        {
            return [];
        }

        try
        {
            return CommandLine.Split(text);
        }
        catch (FormatException e)
        {
            reader.Error(key, e.Message);
            return [];
        }
    }
}
