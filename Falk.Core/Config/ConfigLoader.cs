using System.Globalization;
using System.Text.RegularExpressions;
using Falk.Core.Machines;
using Falk.Core.Ssh;
using Microsoft.Extensions.Configuration;

namespace Falk.Core.Config;

/// <summary>
/// Loads falk.conf in the original daemon's INI format. Every problem is collected as one line;
/// the first <see cref="ConfigException"/> carries them all, so a bad file is fixed in one go.
/// </summary>
public static partial class ConfigLoader
{
    public const string DaemonSection = "falk";

    /// <summary>Template types the original daemon knew; a section of one without a backend here is skipped with a warning.</summary>
    private static readonly string[] OriginalTypes = ["qemu", "podman", "custom", "lxd"];

    [GeneratedRegex(@"^\[\s*(\d+)\s*,\s*(\d+)\s*\]$|^(\d+)\s*-\s*(\d+)$")]
    private static partial Regex PortRangePattern();

    public static FalkConfig Load(string path, IReadOnlyList<BackendDescriptor> backends)
    {
        var fullPath = Path.GetFullPath(path);
        IConfigurationRoot root;
        try
        {
            root = new ConfigurationBuilder().AddInMemoryCollection(IniContinuations.Read(fullPath)).Build();
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new ConfigException([$"{fullPath}: no such file"]);
        }
        catch (Exception e) when (e is FormatException or InvalidDataException or IOException or UnauthorizedAccessException)
        {
            throw new ConfigException([$"{fullPath}: {e.Message.TrimEnd('.')}"]);
        }

        var errors = new List<string>();
        var warnings = new List<string>();

        // An empty or absent [falk] section means all defaults (the INI reader cannot tell the two apart).
        // A justin-era file (falk's later name) has [justin] instead.
        var daemonName = !root.GetSection(DaemonSection).GetChildren().Any() && root.GetSection(DaemonOptions.JustinEra).GetChildren().Any()
            ? DaemonOptions.JustinEra
            : DaemonSection;
        var daemonSection = root.GetSection(daemonName);
        var daemon = ReadDaemon(new SectionReader(fullPath, daemonSection, errors), backends, warnings) with { ProtocolEra = daemonName };

        var templates = new List<TemplateDefinition>();
        foreach (var section in root.GetChildren().Where(s => !string.Equals(s.Key, daemonName, StringComparison.OrdinalIgnoreCase)))
        {
            if (section.Value is not null && !section.GetChildren().Any())
            {
                errors.Add($"{fullPath}: {section.Key}: key outside of any section");
                continue;
            }

            var template = ReadTemplate(new SectionReader(fullPath, section, errors), backends, warnings);
            if (template is not null)
            {
                templates.Add(template);
            }
        }

        foreach (var (type, options) in daemon.BackendOptions)
        {
            if (options is ICheckedWhenUsed { ProblemWhenUsed: { } problem } && templates.Any(t => t.Type == type))
            {
                errors.Add($"{fullPath}: [{daemonName}] {problem}");
            }
        }

        var pooled = templates.Sum(t => t.PoolSize);
        if (pooled > daemon.MaxMachines)
        {
            errors.Add($"{fullPath}: pool_size: the templates' warm pools hold {pooled} machines, more than max_machines ({daemon.MaxMachines}) allows");
        }

        if (errors.Count > 0)
        {
            throw new ConfigException(errors);
        }

        return new FalkConfig(fullPath, daemon, templates, warnings);
    }

    private static DaemonOptions ReadDaemon(SectionReader reader, IReadOnlyList<BackendDescriptor> backends, List<string> warnings)
    {
        var options = new DaemonOptions();

        var name = reader.Text("name") ?? options.Name;
        var socket = reader.FilePath("control_socket") ?? options.ControlSocket;

        var permissions = options.ControlSocketPermissions;
        var permissionText = reader.Text("control_socket_permissions");
        if (permissionText is not null)
        {
            if (permissionText.Length is < 1 or > 4 || !permissionText.All(c => c is >= '0' and <= '7'))
            {
                reader.Error("control_socket_permissions", $"'{permissionText}' is not an octal file mode such as 770");
            }
            else
            {
                permissions = (UnixFileMode)Convert.ToInt32(permissionText, 8) & (UnixFileMode)0x1FF;
            }
        }

        var ports = options.VmPorts;
        var portText = reader.Text("vm_ports");
        if (portText is not null)
        {
            var match = PortRangePattern().Match(portText);
            if (!match.Success)
            {
                reader.Error("vm_ports", $"'{portText}' is not a port range such as [7888,8000]");
            }
            else
            {
                var first = int.Parse(match.Groups[1].Success ? match.Groups[1].Value : match.Groups[3].Value, CultureInfo.InvariantCulture);
                var last = int.Parse(match.Groups[2].Success ? match.Groups[2].Value : match.Groups[4].Value, CultureInfo.InvariantCulture);
                if (first is < 1 or > 65535 || last is < 1 or > 65535 || first > last)
                {
                    reader.Error("vm_ports", $"'{portText}' must be two ports from 1 to 65535, the first not above the second");
                }
                else
                {
                    ports = new PortRange(first, last);
                }
            }
        }

        var maxLease = reader.Number("max_lease_seconds", 1, 365 * 86400) ?? options.MaxLeaseSeconds;
        var defaultLease = reader.Number("default_lease_seconds", 1, 365 * 86400) ?? Math.Min(options.DefaultLeaseSeconds, maxLease);
        if (defaultLease > maxLease)
        {
            reader.Error("default_lease_seconds", $"{defaultLease} is longer than max_lease_seconds ({maxLease})");
        }

        var onShutdown = reader.Text("on_shutdown") switch
        {
            null or "keep" => ShutdownPolicy.Keep,
            "destroy" => ShutdownPolicy.Destroy,
            var other => Invalid(other),
        };

        ShutdownPolicy Invalid(string value)
        {
            reader.Error("on_shutdown", $"'{value}' is neither keep nor destroy");
            return ShutdownPolicy.Keep;
        }

        var result = options with
        {
            OnShutdown = onShutdown,
            DefaultLeaseSeconds = defaultLease,
            MaxLeaseSeconds = maxLease,
            Name = name,
            ControlSocket = socket,
            ControlSocketPermissions = permissions,
            ControlSocketGroup = reader.Text("control_socket_group"),
            StateDirectory = reader.FilePath("state_dir") ?? options.StateDirectory,
            VmPorts = ports,
            MaxMachines = reader.Number("max_machines", 1, 10_000) ?? ports.Count,
            MaxMachinesPerOwner = reader.Number("max_machines_per_owner", 1, 10_000),
            MaxSnapshotsPerMachine = reader.Number("max_snapshots_per_machine", 1, 1000) ?? options.MaxSnapshotsPerMachine,
            MaxConnectionsPerUid = reader.Number("max_connections_per_uid", 1, 100_000) ?? options.MaxConnectionsPerUid,
            MaxEventStreamsPerUid = reader.Number("max_event_streams_per_uid", 1, 100_000) ?? options.MaxEventStreamsPerUid,
            ConsoleMaxBytes = reader.Number("console_max_bytes", 1024 * 1024, int.MaxValue) ?? options.ConsoleMaxBytes,
            AllowedUsers = reader.List("allowed_users"),
            AllowedGroups = reader.List("allowed_groups"),
            AdminUsers = reader.List("admin_users"),
            AdminGroups = reader.List("admin_groups"),
            BackendOptions = ReadBackendDaemonOptions(reader, backends),
        };

        WarnUnknownKeys(reader, warnings);
        return result;
    }

    /// <summary>The keys backends add to <c>[falk]</c> (an engine's socket …), each read by its own backend.</summary>
    private static Dictionary<string, object> ReadBackendDaemonOptions(SectionReader reader, IReadOnlyList<BackendDescriptor> backends)
    {
        var options = new Dictionary<string, object>(StringComparer.Ordinal);
        foreach (var backend in backends)
        {
            if (backend.ParseDaemonOptions?.Invoke(reader) is { } parsed)
            {
                options[backend.Type] = parsed;
            }
        }

        return options;
    }

    private static TemplateDefinition? ReadTemplate(SectionReader reader, IReadOnlyList<BackendDescriptor> backends, List<string> warnings)
    {
        var errorsBefore = reader.ErrorCount;
        var id = reader.Section;
        if (Names.Problem(id) is { } idProblem)
        {
            reader.Error("(section name)", $"'{id}' {idProblem}");
        }

        var type = reader.Required("type");
        if (type is null)
        {
            return null;
        }

        var backend = backends.FirstOrDefault(b => b.Type == type);
        if (backend is null)
        {
            if (OriginalTypes.Contains(type))
            {
                warnings.Add($"{reader.ConfigPath}: [{id}] type: '{type}' machines are not supported by this build; template skipped");
            }
            else
            {
                reader.Error("type", $"unknown machine type '{type}' (known: {string.Join(", ", backends.Select(b => b.Type))})");
            }

            return null;
        }

        var name = reader.Text("name") ?? id;
        if (Names.Problem(name) is { } nameProblem)
        {
            reader.Error("name", $"'{name}' {nameProblem}");
        }

        var sshUser = reader.Required("ssh_user");
        var sshHost = ResolveSshHost(reader, backend);
        var sshPort = reader.Number("ssh_port", 1, 65535);
        var maxMachines = reader.Number("max_machines", 1, 10_000);
        var poolSize = reader.Number("pool_size", 0, 10_000) ?? 0;
        if (poolSize > 0 && maxMachines < poolSize)
        {
            reader.Error("pool_size", $"{poolSize} is more than the template's max_machines ({maxMachines})");
        }

        if (poolSize > 1 && sshPort is not null)
        {
            reader.Error("pool_size", $"{poolSize} machines cannot share the fixed ssh_port {sshPort}: a pool of more than one takes its ports from vm_ports");
        }

        var hostKeys = ReadHostKeys(reader, backend.PinnedKeySource is null ? warnings : null);
        var backendOptions = backend.ParseOptions(reader);

        WarnUnknownKeys(reader, warnings);
        if (reader.ErrorCount > errorsBefore || sshUser is null || backendOptions is null)
        {
            return null;
        }

        return new TemplateDefinition
        {
            Id = id,
            Name = name,
            Type = type,
            SshUser = sshUser,
            SshHost = sshHost,
            SshPort = sshPort,
            MaxMachines = maxMachines,
            PoolSize = poolSize,
            KnownHostKeys = hostKeys,
            ManageSupported = backend.SupportsManage,
            BackendOptions = backendOptions,
        };
    }

    /// <summary>The literal address <c>ssh_host</c> stands for (see <see cref="SshHostAddress"/>), or the backend's dynamic marker.</summary>
    private static string ResolveSshHost(SectionReader reader, BackendDescriptor backend)
    {
        var host = reader.Text("ssh_host", "localhost");
        if (host == backend.DynamicSshHost)
        {
            return host;
        }

        var address = SshHostAddress.TryResolve(host, out var problem);
        if (address is null)
        {
            reader.Error("ssh_host", problem!);
            return host;
        }

        return address.ToString();
    }

    /// <param name="warnings">Where to warn that keys go unverified; null when the backend pins a key of its own (made per machine, or read from the image).</param>
    private static IReadOnlyList<HostKey> ReadHostKeys(SectionReader reader, List<string>? warnings)
    {
        var inline = reader.Text("ssh_known_host_key");
        var file = reader.FilePath("ssh_known_host_key_file");
        if (inline is not null && file is not null)
        {
            reader.Error("ssh_known_host_key_file", "set either ssh_known_host_key or ssh_known_host_key_file, not both");
            return [];
        }

        if (inline is not null)
        {
            var key = HostKey.TryParse(inline, out var problem);
            if (key is null)
            {
                reader.Error("ssh_known_host_key", problem!);
                return [];
            }

            return [key];
        }

        if (file is not null)
        {
            string text;
            try
            {
                text = File.ReadAllText(file);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                reader.Error("ssh_known_host_key_file", $"cannot read {file}: {e.Message}");
                return [];
            }

            var keys = HostKey.ParseMany(text, out var problem);
            if (problem is not null)
            {
                reader.Error("ssh_known_host_key_file", $"{file}: {problem}");
            }

            return keys;
        }

        warnings?.Add($"{reader.ConfigPath}: [{reader.Section}] neither ssh_known_host_key nor ssh_known_host_key_file is set: host keys will be observed, not verified");
        return [];
    }

    private static void WarnUnknownKeys(SectionReader reader, List<string> warnings)
    {
        foreach (var key in reader.UnreadKeys())
        {
            warnings.Add($"{reader.ConfigPath}: [{reader.Section}] {key}: unknown key, ignored");
        }
    }
}
