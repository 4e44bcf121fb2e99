using System.Formats.Tar;
using System.Globalization;
using Docker.DotNet;
using Docker.DotNet.Models;

namespace Falk.Core.Backends.Podman.Engine;

/// <summary>What a container is made of. Ports are published on <see cref="HostAddress"/>.</summary>
public sealed record ContainerSpec(string Name, string Image, IReadOnlyDictionary<string, string> Labels, string HostAddress)
{
    /// <summary>Container port (<c>22/tcp</c>) to host port; an empty host port lets the engine choose.</summary>
    public IReadOnlyList<(string ContainerPort, string HostPort)> Ports { get; init; } = [];

    public IReadOnlyList<string>? Command { get; init; }

    public IReadOnlyList<string> Environment { get; init; } = [];

    /// <summary><c>SOURCE:TARGET[:OPTIONS]</c>, as <c>podman run -v</c> takes them.</summary>
    public IReadOnlyList<string> Binds { get; init; } = [];

    public IReadOnlyList<DeviceSpec> Devices { get; init; } = [];

    public long? MemoryBytes { get; init; }

    public long? NanoCpus { get; init; }

    /// <summary>The most the engine's own log of the container (its console) may grow to; null for the engine's default.</summary>
    public long? LogMaxBytes { get; init; }
}

public sealed record DeviceSpec(string HostPath, string ContainerPath, string Permissions);

/// <summary>A container as the engine sees it now.</summary>
public sealed record ContainerStatus(string Id, string Name, string ImageId, bool Running, string Status, long ExitCode, bool OomKilled);

/// <summary>One container in a listing.</summary>
public sealed record ContainerSummary(string Id, IReadOnlyList<string> Names, string State, IReadOnlyDictionary<string, string> Labels);

/// <summary>Containers, as Falk uses them. Every call takes a token; a container that is not there is a result, not an error.</summary>
public interface IPodmanContainers
{
    Task<string> CreateAsync(ContainerSpec spec, CancellationToken cancellationToken);

    /// <summary>Null when the container does not exist.</summary>
    Task<ContainerStatus?> InspectAsync(string id, CancellationToken cancellationToken);

    Task StartAsync(string id, CancellationToken cancellationToken);

    /// <summary>SIGTERM (or the image's stop signal), SIGKILL after <paramref name="grace"/>. False when it was not running or is gone.</summary>
    Task<bool> StopAsync(string id, TimeSpan grace, CancellationToken cancellationToken);

    /// <summary>SIGKILL. False when it was not running or is gone.</summary>
    Task<bool> KillAsync(string id, CancellationToken cancellationToken);

    /// <summary>Forced removal. False when it was already gone.</summary>
    Task<bool> RemoveAsync(string id, CancellationToken cancellationToken);

    /// <summary>The content of one file of the container's filesystem (works before it ever started); null when it is missing.</summary>
    Task<byte[]?> ReadFileAsync(string id, string path, CancellationToken cancellationToken);

    /// <summary>The output stream (stdout and stderr interleaved, as the engine logged them).</summary>
    Task<ContainerLog> LogsAsync(string id, ContainerLogQuery query, CancellationToken cancellationToken);

    Task<IReadOnlyList<ContainerSummary>> ListAsync(IReadOnlyDictionary<string, string> labels, CancellationToken cancellationToken);
}

/// <param name="Follow">Keep the stream open for new lines until the container stops.</param>
/// <param name="Tail">Lines from the end, or null for all.</param>
public sealed record ContainerLogQuery(bool Follow, int? Tail = null);

/// <summary>A container's log as a stream of bytes (the engine's multiplexing already removed).</summary>
public sealed class ContainerLog(MultiplexedStream stream) : IDisposable
{
    /// <summary>Reads the next chunk into <paramref name="buffer"/>; 0 at the end.</summary>
    public async Task<int> ReadAsync(byte[] buffer, CancellationToken cancellationToken)
    {
        var result = await stream.ReadOutputAsync(buffer, 0, buffer.Length, cancellationToken).ConfigureAwait(false);
        return result.EOF ? 0 : result.Count;
    }

    /// <summary>
    /// Copies the log to <paramref name="destination"/> after skipping its first <paramref name="skip"/> bytes, flushing
    /// after each chunk so a follower sees lines as they come. Returns the bytes read (skipped ones included).
    /// </summary>
    public async Task<long> CopyToAsync(Stream destination, long skip, CancellationToken cancellationToken)
    {
        var buffer = new byte[16 * 1024];
        long total = 0;
        int read;
        while ((read = await ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0)
        {
            var offset = (int)Math.Clamp(skip - total, 0, read);
            total += read;
            if (offset < read)
            {
                await destination.WriteAsync(buffer.AsMemory(offset, read - offset), cancellationToken).ConfigureAwait(false);
                await destination.FlushAsync(cancellationToken).ConfigureAwait(false);
            }
        }

        return total;
    }

    public void Dispose() => stream.Dispose();
}

internal sealed class PodmanContainers(PodmanEngine engine) : IPodmanContainers
{
    public async Task<string> CreateAsync(ContainerSpec spec, CancellationToken cancellationToken)
    {
        var parameters = new CreateContainerParameters
        {
            Name = spec.Name,
            Image = spec.Image,
            Labels = spec.Labels.ToDictionary(),
            Env = spec.Environment.ToList(),
            ExposedPorts = spec.Ports.ToDictionary(p => p.ContainerPort, _ => default(EmptyStruct)),
            HostConfig = new HostConfig
            {
                PortBindings = spec.Ports
                    .GroupBy(p => p.ContainerPort)
                    .ToDictionary(g => g.Key, g => (IList<PortBinding>)g.Select(p => new PortBinding { HostIP = spec.HostAddress, HostPort = p.HostPort }).ToList()),
                Binds = spec.Binds.ToList(),
                Devices = spec.Devices.Select(d => new DeviceMapping { PathOnHost = d.HostPath, PathInContainer = d.ContainerPath, CgroupPermissions = d.Permissions }).ToList(),
                Memory = spec.MemoryBytes ?? 0,
                NanoCPUs = spec.NanoCpus ?? 0,
            },
        };
        if (spec.LogMaxBytes is { } logMax)
        {
            // Podman's own file of the container's output (k8s-file, what the logs endpoint reads) is cut at this size.
            parameters.HostConfig.LogConfig = new LogConfig
            {
                Type = "k8s-file",
                Config = new Dictionary<string, string> { ["max-size"] = logMax.ToString(System.Globalization.CultureInfo.InvariantCulture) },
            };
        }

        if (spec.Command is not null)
        {
            parameters.Cmd = spec.Command.ToList();
        }

        var created = await engine.CallAsync($"create container {spec.Name} from {spec.Image}",
            (client, ct) => client.Containers.CreateContainerAsync(parameters, ct), cancellationToken).ConfigureAwait(false);
        return created.ID;
    }

    public async Task<ContainerStatus?> InspectAsync(string id, CancellationToken cancellationToken)
    {
        try
        {
            var container = await engine.CallAsync($"inspect container {id}",
                (client, ct) => client.Containers.InspectContainerAsync(id, ct), cancellationToken).ConfigureAwait(false);
            var state = container.State;
            return new ContainerStatus(container.ID, (container.Name ?? id).TrimStart('/'), container.Image, state?.Running == true,
                state?.Status ?? "unknown", state?.ExitCode ?? 0, state?.OOMKilled == true);
        }
        catch (PodmanApiException e) when (e.IsNotFound)
        {
            return null;
        }
    }

    public Task StartAsync(string id, CancellationToken cancellationToken) =>
        engine.CallAsync($"start container {id}",
            (client, ct) => client.Containers.StartContainerAsync(id, new ContainerStartParameters(), ct), cancellationToken);

    public async Task<bool> StopAsync(string id, TimeSpan grace, CancellationToken cancellationToken)
    {
        var seconds = (uint)Math.Ceiling(Math.Max(0, grace.TotalSeconds));
        try
        {
            return await engine.CallAsync($"stop container {id}",
                (client, ct) => client.Containers.StopContainerAsync(id, new ContainerStopParameters { WaitBeforeKillSeconds = seconds }, ct),
                cancellationToken).ConfigureAwait(false);
        }
        catch (PodmanApiException e) when (e.IsNotFound || e.IsNotRunning)
        {
            return false;
        }
    }

    public async Task<bool> KillAsync(string id, CancellationToken cancellationToken)
    {
        try
        {
            await engine.CallAsync($"kill container {id}",
                (client, ct) => client.Containers.KillContainerAsync(id, new ContainerKillParameters(), ct), cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (PodmanApiException e) when (e.IsNotFound || e.IsNotRunning || e.IsConflict)
        {
            return false;
        }
    }

    public async Task<bool> RemoveAsync(string id, CancellationToken cancellationToken)
    {
        try
        {
            await engine.CallAsync($"remove container {id}",
                (client, ct) => client.Containers.RemoveContainerAsync(id, new ContainerRemoveParameters { Force = true, RemoveVolumes = true }, ct),
                cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (PodmanApiException e) when (e.IsNotFound)
        {
            return false;
        }
    }

    public async Task<byte[]?> ReadFileAsync(string id, string path, CancellationToken cancellationToken)
    {
        try
        {
            return await engine.CallAsync($"read {path} of container {id}", async (client, ct) =>
            {
                var archive = await client.Containers.GetArchiveFromContainerAsync(id, new ContainerPathStatParameters { Path = path }, false, ct).ConfigureAwait(false);
                using var stream = archive.Stream ?? Stream.Null;
                var reader = new TarReader(stream);
                await using (reader.ConfigureAwait(false))
                {
                    while (await reader.GetNextEntryAsync(copyData: false, ct).ConfigureAwait(false) is { } entry)
                    {
                        if (entry.EntryType is TarEntryType.RegularFile or TarEntryType.V7RegularFile && entry.DataStream is not null)
                        {
                            using var content = new MemoryStream();
                            await entry.DataStream.CopyToAsync(content, ct).ConfigureAwait(false);
                            return content.ToArray();
                        }
                    }

                    return null;
                }
            }, cancellationToken).ConfigureAwait(false);
        }
        catch (PodmanApiException e) when (e.IsNotFound)
        {
            return null;
        }
    }

    public async Task<ContainerLog> LogsAsync(string id, ContainerLogQuery query, CancellationToken cancellationToken)
    {
        var parameters = new ContainerLogsParameters
        {
            ShowStdout = true,
            ShowStderr = true,
            Follow = query.Follow,
            Tail = query.Tail?.ToString(CultureInfo.InvariantCulture) ?? "all",
        };
        var stream = await engine.CallAsync($"read the log of container {id}",
            (client, ct) => client.Containers.GetContainerLogsAsync(id, parameters, ct), cancellationToken).ConfigureAwait(false);
        return new ContainerLog(stream);
    }

    public async Task<IReadOnlyList<ContainerSummary>> ListAsync(IReadOnlyDictionary<string, string> labels, CancellationToken cancellationToken)
    {
        var parameters = new ContainersListParameters { All = true, Filters = LabelFilter.Of(labels) };
        var containers = await engine.CallAsync("list containers",
            (client, ct) => client.Containers.ListContainersAsync(parameters, ct), cancellationToken).ConfigureAwait(false);
        return containers
            .Select(c => new ContainerSummary(c.ID, c.Names?.Select(n => n.TrimStart('/')).ToList() ?? [], c.State,
                (IReadOnlyDictionary<string, string>?)c.Labels?.ToDictionary() ?? new Dictionary<string, string>()))
            .Where(c => LabelFilter.Matches(c.Labels, labels))
            .ToList();
    }
}

internal static class LabelFilter
{
    /// <summary>
    /// Whether <paramref name="labels"/> carry every one of <paramref name="required"/>. Listings are checked again with
    /// this: podman 4.3 is not to be trusted to AND several label filters (one daemon's reaper must never see another's).
    /// </summary>
    public static bool Matches(IReadOnlyDictionary<string, string> labels, IReadOnlyDictionary<string, string> required) =>
        required.All(r => labels.TryGetValue(r.Key, out var value) && value == r.Value);

    /// <summary>The API's filter form: <c>{"label": {"key=value": true, …}}</c> (all must match).</summary>
    public static Dictionary<string, IDictionary<string, bool>> Of(IReadOnlyDictionary<string, string> labels) => new()
    {
        ["label"] = labels.ToDictionary(l => $"{l.Key}={l.Value}", _ => true),
    };
}
