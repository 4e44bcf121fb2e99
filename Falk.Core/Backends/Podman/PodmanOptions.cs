using System.Globalization;
using System.Text.RegularExpressions;
using Falk.Core.Backends.Podman.Engine;
using Falk.Core.Config;
using Falk.Core.Processes;

namespace Falk.Core.Backends.Podman;

/// <summary>The podman backend's key of <c>[falk]</c>: where podman's Docker-compatible API listens.</summary>
public sealed record PodmanDaemonOptions(Uri Socket)
{
    public const string SocketKey = "podman_socket";

    public static readonly Uri DefaultSocket = new("unix:///run/podman/podman.sock");

    public static PodmanDaemonOptions Default { get; } = new(DefaultSocket);

    /// <summary><c>unix:///PATH</c> or a plain path (relative to the config file).</summary>
    internal static object? Parse(SectionReader reader)
    {
        var text = reader.Text(SocketKey);
        if (text is null)
        {
            return Default;
        }

        if (text.StartsWith("unix://", StringComparison.Ordinal))
        {
            text = text["unix://".Length..];
        }

        if (text.Length == 0 || text.Contains("://", StringComparison.Ordinal))
        {
            reader.Error(SocketKey, $"'{text}' is not a Unix socket (write unix:///PATH or a path)");
            return Default;
        }

        return new PodmanDaemonOptions(new Uri("unix://" + Path.GetFullPath(text, reader.ConfigDirectory)));
    }
}

/// <summary>
/// A <c>type = podman</c> template. What the original put on its <c>podman run</c> line (<c>command</c>, now ignored)
/// has keys of its own: <c>memory</c>, <c>cpus</c>, <c>volumes</c>, <c>environment</c>, <c>devices</c>, <c>publish</c>.
/// </summary>
/// <param name="BaseImage">The image machines start from until a management commit publishes a newer one.</param>
/// <param name="IgnoredCommand">The original's <c>command</c> line, when one is configured: logged once as ignored.</param>
public sealed partial record PodmanTemplateOptions(
    string BaseImage,
    long? MemoryBytes,
    long? NanoCpus,
    IReadOnlyList<string> Volumes,
    IReadOnlyList<string> Environment,
    IReadOnlyList<DeviceSpec> Devices,
    IReadOnlyList<(string ContainerPort, string HostPort)> Publish,
    string? IgnoredCommand)
{
    /// <summary>Podman refuses less.</summary>
    public const long MinimumMemoryBytes = 6 * 1024 * 1024;

    public const string HostKeyKey = "host_key";

    public static BackendDescriptor Descriptor { get; } = new("podman", Parse, SupportsManage: true, PodmanDaemonOptions.Parse,
        PinnedKeySource: options => ((PodmanTemplateOptions)options).HostKey);

    /// <summary>
    /// Where the pinned host key comes from when the template configures none (<c>host_key</c>): <c>machine</c> (the
    /// default) makes one per machine and mounts it over the image's <c>/etc/ssh/ssh_host_ed25519_key</c>; <c>image</c>
    /// reads the image's own key, which every machine of the image shares.
    /// </summary>
    public string HostKey { get; init; } = Machines.HostKeySources.Machine;

    [GeneratedRegex(@"^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$", RegexOptions.IgnoreCase)]
    private static partial Regex SizePattern();

    [GeneratedRegex(@"^[A-Za-z_][A-Za-z0-9_]*=")]
    private static partial Regex EnvironmentPattern();

    [GeneratedRegex(@"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    private static partial Regex VolumeNamePattern();

    [GeneratedRegex(@"^(?:(\d{1,5}):)?(\d{1,5})(?:/(tcp|udp))?$")]
    private static partial Regex PublishPattern();

    private static PodmanTemplateOptions? Parse(SectionReader reader)
    {
        var errors = reader.ErrorCount;
        var baseImage = reader.Required("base_image");
        var command = reader.Text("command");
        var memory = ReadMemory(reader);
        var cpus = ReadCpus(reader);
        var volumes = ReadVolumes(reader);
        var environment = ReadEnvironment(reader);
        var devices = ReadDevices(reader);
        var publish = ReadPublish(reader);
        var hostKey = reader.Text(HostKeyKey, Machines.HostKeySources.Machine);
        if (hostKey is not (Machines.HostKeySources.Machine or Machines.HostKeySources.Image))
        {
            reader.Error(HostKeyKey, $"'{hostKey}' is neither machine (a key made per machine) nor image (the image's own key)");
        }

        return baseImage is null || reader.ErrorCount > errors
            ? null
            : new PodmanTemplateOptions(baseImage, memory, cpus, volumes, environment, devices, publish, command) { HostKey = hostKey };
    }

    private static long? ReadMemory(SectionReader reader)
    {
        var text = reader.Text("memory");
        if (text is null)
        {
            return null;
        }

        var match = SizePattern().Match(text);
        if (!match.Success || !double.TryParse(match.Groups[1].Value, NumberStyles.Float, CultureInfo.InvariantCulture, out var number))
        {
            reader.Error("memory", $"'{text}' is not a size such as 512m or 2g");
            return null;
        }

        var bytes = number * (match.Groups[2].Value.ToLowerInvariant() switch
        {
            "k" => 1L << 10,
            "m" => 1L << 20,
            "g" => 1L << 30,
            "t" => 1L << 40,
            _ => 1L,
        });
        if (bytes < MinimumMemoryBytes || bytes > long.MaxValue / 2)
        {
            reader.Error("memory", $"'{text}' must be at least 6m");
            return null;
        }

        return (long)bytes;
    }

    private static long? ReadCpus(SectionReader reader)
    {
        var text = reader.Text("cpus");
        if (text is null)
        {
            return null;
        }

        if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var cpus) || cpus < 0.01 || cpus > System.Environment.ProcessorCount)
        {
            reader.Error("cpus", $"'{text}' is not a number of CPUs from 0.01 to {System.Environment.ProcessorCount} (this host's)");
            return null;
        }

        return (long)Math.Round(cpus * 1e9);
    }

    /// <summary><c>SOURCE:TARGET[:OPTIONS]</c> items, separated by spaces or commas; SOURCE is an absolute host path or a volume name.</summary>
    private static List<string> ReadVolumes(SectionReader reader)
    {
        var result = new List<string>();
        foreach (var item in Items(reader, "volumes", splitCommas: true))
        {
            var parts = item.Split(':');
            var source = parts[0];
            var problem = parts.Length is < 2 or > 3 ? "is not SOURCE:TARGET or SOURCE:TARGET:OPTIONS"
                : !(Path.IsPathRooted(source) || VolumeNamePattern().IsMatch(source)) ? "has a SOURCE that is neither an absolute path nor a volume name"
                : !parts[1].StartsWith('/') ? "has a TARGET that is not an absolute path"
                : parts.Length == 3 && parts[2].Split('+', ',').Any(o => o is not ("ro" or "rw" or "z" or "Z" or "U" or "noexec" or "nosuid" or "nodev")) ? "has an unknown option (known: ro, rw, z, Z, U, noexec, nosuid, nodev; join them with +)"
                : null;
            if (problem is not null)
            {
                reader.Error("volumes", $"'{item}' {problem}");
                continue;
            }

            result.Add(parts.Length == 3 ? $"{parts[0]}:{parts[1]}:{parts[2].Replace('+', ',')}" : item);
        }

        return result;
    }

    /// <summary><c>NAME=VALUE</c> items separated by spaces; quote values with spaces as a shell would.</summary>
    private static List<string> ReadEnvironment(SectionReader reader)
    {
        var result = new List<string>();
        foreach (var item in Items(reader, "environment", splitCommas: false))
        {
            if (!EnvironmentPattern().IsMatch(item))
            {
                reader.Error("environment", $"'{item}' is not NAME=VALUE");
                continue;
            }

            result.Add(item);
        }

        return result;
    }

    /// <summary><c>/dev/X</c>, <c>/dev/X:/dev/Y</c> or <c>/dev/X:/dev/Y:rwm</c>; the host device must exist.</summary>
    private static List<DeviceSpec> ReadDevices(SectionReader reader)
    {
        var result = new List<DeviceSpec>();
        foreach (var item in Items(reader, "devices", splitCommas: true))
        {
            var parts = item.Split(':');
            var host = parts[0];
            var container = parts.Length > 1 ? parts[1] : host;
            var permissions = parts.Length > 2 ? parts[2] : "rwm";
            var problem = parts.Length > 3 || !host.StartsWith("/dev/", StringComparison.Ordinal) || !container.StartsWith("/dev/", StringComparison.Ordinal)
                ? "is not /dev/HOST[:/dev/CONTAINER[:PERMISSIONS]]"
                : permissions.Length == 0 || permissions.Any(c => c is not ('r' or 'w' or 'm')) ? "has permissions other than r, w and m"
                : !File.Exists(host) ? $"names {host}, which does not exist on this host"
                : null;
            if (problem is not null)
            {
                reader.Error("devices", $"'{item}' {problem}");
                continue;
            }

            result.Add(new DeviceSpec(host, container, permissions));
        }

        return result;
    }

    /// <summary>Extra published ports: <c>CONTAINER[/PROTO]</c> (the engine picks the host port) or <c>HOST:CONTAINER[/PROTO]</c>.</summary>
    private static List<(string, string)> ReadPublish(SectionReader reader)
    {
        var result = new List<(string, string)>();
        foreach (var item in Items(reader, "publish", splitCommas: true))
        {
            var match = PublishPattern().Match(item);
            var ports = match.Success ? new[] { match.Groups[1].Value, match.Groups[2].Value } : [];
            if (!match.Success || ports.Any(p => p.Length > 0 && int.Parse(p, CultureInfo.InvariantCulture) is < 1 or > 65535))
            {
                reader.Error("publish", $"'{item}' is not CONTAINER_PORT[/tcp|udp] or HOST_PORT:CONTAINER_PORT[/tcp|udp] with ports from 1 to 65535");
                continue;
            }

            var protocol = match.Groups[3].Success ? match.Groups[3].Value : "tcp";
            if (match.Groups[2].Value == "22" && protocol == "tcp")
            {
                reader.Error("publish", $"'{item}': port 22/tcp is always published on the machine's SSH port");
                continue;
            }

            result.Add(($"{match.Groups[2].Value}/{protocol}", match.Groups[1].Value));
        }

        return result;
    }

    private static IEnumerable<string> Items(SectionReader reader, string key, bool splitCommas)
    {
        var text = reader.Text(key);
        if (text is null)
        {
            return [];
        }

        try
        {
            var words = CommandLine.Split(text);
            return splitCommas
                ? words.SelectMany(w => w.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToList()
                : words;
        }
        catch (FormatException e)
        {
            reader.Error(key, e.Message);
            return [];
        }
    }
}
