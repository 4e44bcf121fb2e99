using System.Net;
using System.Net.Sockets;
using Falk.Core.Backends.Podman.Engine;
using Falk.Core.Config;
using Falk.Core.Machines;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Backends.Podman;

/// <summary>
/// Machines as podman containers, made and driven through podman's Docker-compatible API (never its CLI).
/// A machine is one container named after it, labelled as Falk's, with port 22 published on the machine's SSH port;
/// it is created from the template's current image by id, so a later commit does not change it.
/// </summary>
public sealed class PodmanBackend : IMachineBackend
{
    private readonly IPodmanContainers _containers;
    private readonly IPodmanImages _images;
    private readonly PodmanExitWatch _exits;
    private readonly PodmanImageStore _store;
    private readonly ILogger<PodmanBackend> _logger;

    public PodmanBackend(FalkConfig config, IPodmanContainers containers, IPodmanImages images, PodmanExitWatch exits, PodmanImageStore store, ILogger<PodmanBackend> logger)
    {
        _exits = exits;
        _containers = containers;
        _images = images;
        _store = store;
        _logger = logger;
        foreach (var template in config.Templates.Where(t => t.Type == Type))
        {
            if (((PodmanTemplateOptions)template.BackendOptions).IgnoredCommand is { } command)
            {
                PodmanLog.CommandIgnored(logger, template.Name, command);
            }
        }
    }

    public string Type => PodmanTemplateOptions.Descriptor.Type;

    public async Task<IMachineInstance> PrepareAsync(MachineSpec spec, CancellationToken cancellationToken)
    {
        var options = (PodmanTemplateOptions)spec.Template.BackendOptions;
        var address = await ResolveAsync(spec.Template.SshHost, cancellationToken).ConfigureAwait(false);
        try
        {
            using (_store.BeginCreate())
            {
                var (reference, imageId) = await _store.CurrentAsync(spec.Template, cancellationToken).ConfigureAwait(false);
                var containerSpec = new ContainerSpec(spec.MachineId, imageId, PodmanLabels.Of(_store.Naming.Instance, spec), address.ToString())
                {
                    Ports = [("22/tcp", spec.SshPort.ToString(System.Globalization.CultureInfo.InvariantCulture)), .. options.Publish],
                    Environment = options.Environment,
                    Binds = options.Volumes,
                    Devices = options.Devices,
                    MemoryBytes = options.MemoryBytes,
                    NanoCpus = options.NanoCpus,
                };
                var containerId = await _containers.CreateAsync(containerSpec, cancellationToken).ConfigureAwait(false);
                PodmanLog.Created(_logger, spec.MachineId, containerId, reference, imageId, containerSpec.HostAddress, spec.SshPort);
                try
                {
                    var keys = spec.Template.KnownHostKeys.Count > 0
                        ? []
                        : await DiscoverHostKeysAsync(spec, containerId, imageId, cancellationToken).ConfigureAwait(false);
                    var fromCommittedVersion = reference != options.BaseImage;
                    return new PodmanMachine(spec, containerSpec, containerId, fromCommittedVersion, keys, _containers, _images, _exits, _store, _logger);
                }
                catch
                {
                    await _containers.RemoveAsync(containerId, CancellationToken.None).ConfigureAwait(false);
                    throw;
                }
            }
        }
        catch (PodmanApiException e)
        {
            throw new BackendOperationException($"podman could not prepare machine {spec.MachineId}: {e.Message}", e);
        }
    }

    private async Task<IReadOnlyList<Ssh.HostKey>> DiscoverHostKeysAsync(MachineSpec spec, string containerId, string imageId, CancellationToken cancellationToken)
    {
        var keys = await _store.HostKeysAsync(containerId, imageId, cancellationToken).ConfigureAwait(false);
        if (keys.Count == 0)
        {
            PodmanLog.NoHostKeyInImage(_logger, spec.MachineId, imageId);
        }
        else
        {
            PodmanLog.HostKeyFromImage(_logger, spec.MachineId, keys[0].FingerprintSha256, keys[0].Type, imageId);
        }

        return keys;
    }

    /// <summary>The address port 22 is published on: <c>ssh_host</c> itself, or what its name resolves to (IPv4 first).</summary>
    private static async Task<IPAddress> ResolveAsync(string host, CancellationToken cancellationToken)
    {
        if (IPAddress.TryParse(host, out var literal))
        {
            return literal;
        }

        try
        {
            var addresses = await Dns.GetHostAddressesAsync(host, cancellationToken).ConfigureAwait(false);
            return addresses.FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork)
                ?? addresses.FirstOrDefault()
                ?? throw new BackendOperationException($"ssh_host {host} resolves to no address");
        }
        catch (SocketException e)
        {
            throw new BackendOperationException($"ssh_host {host} cannot be resolved: {e.Message}", e);
        }
    }
}
