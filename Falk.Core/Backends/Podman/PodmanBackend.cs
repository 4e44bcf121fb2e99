using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Falk.Core.Backends.Podman.Engine;
using Falk.Core.Config;
using Falk.Core.Machines;
using Falk.Core.Processes;
using Falk.Core.Ssh;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Backends.Podman;

/// <summary>
/// Machines as podman containers, made and driven through podman's Docker-compatible API (never its CLI).
/// A machine is one container named after it, labelled as Falk's, with port 22 published on the machine's SSH port;
/// it is created from the template's current image by id, so a later commit does not change it.
/// </summary>
public sealed class PodmanBackend : IMachineBackend
{
    /// <summary>Where a machine's own host key is mounted: sshd's default ed25519 host key.</summary>
    public const string MachineKeyPath = "/etc/ssh/ssh_host_ed25519_key";

    private readonly IPodmanContainers _containers;
    private readonly IPodmanImages _images;
    private readonly PodmanExitWatch _exits;
    private readonly PodmanImageStore _store;
    private readonly IProcessRunner _runner;
    private readonly ILogger<PodmanBackend> _logger;

    public PodmanBackend(FalkConfig config, IPodmanContainers containers, IPodmanImages images, PodmanExitWatch exits, PodmanImageStore store,
        IProcessRunner runner, ILogger<PodmanBackend> logger)
    {
        _runner = runner;
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
        var address = IPAddress.Parse(spec.Template.SshHost);
        var machineKey = MakesMachineKey(spec)
            ? await HostKeyFiles.MakeAsync(_runner, spec.WorkDirectory, $"falk-machine-{spec.MachineId}", cancellationToken).ConfigureAwait(false)
            : null;
        if (machineKey is not null)
        {
            PodmanLog.HostKeyMadeForMachine(_logger, spec.MachineId, machineKey.FingerprintSha256, MachineKeyPath);
        }

        try
        {
            using (_store.BeginCreate())
            {
                var (reference, imageId) = await _store.CurrentAsync(spec.Template, cancellationToken).ConfigureAwait(false);
                var containerSpec = ContainerSpecOf(spec, imageId, address);
                var containerId = await _containers.CreateAsync(containerSpec, cancellationToken).ConfigureAwait(false);
                PodmanLog.Created(_logger, spec.MachineId, containerId, reference, imageId, containerSpec.HostAddress, spec.SshPort);
                try
                {
                    IReadOnlyList<Ssh.HostKey> keys = spec.Template.KnownHostKeys.Count > 0 ? []
                        : machineKey is not null ? [machineKey]
                        : await DiscoverHostKeysAsync(spec, containerId, imageId, cancellationToken).ConfigureAwait(false);
                    var fromCommittedVersion = reference != options.BaseImage;
                    return new PodmanMachine(spec, containerSpec, containerId, fromCommittedVersion, keys, KeySource(spec), _containers, _images, _exits, _store, _logger);
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

    /// <summary>
    /// Finds the machine's container by its labels (this daemon's instance and the machine id), preferring the one the
    /// handle names: a restore replaces the container, and a daemon killed between the replacement and the handle's
    /// update still finds the new one. A machine whose prepare never finished, or whose container is gone, has its
    /// containers and snapshot images removed instead.
    /// </summary>
    public async Task<ReattachedMachine?> ReattachAsync(MachineSpec spec, string? handle, MachineState? recordedState, CancellationToken cancellationToken)
    {
        try
        {
            var recorded = ReadHandle(handle);
            var containers = await _containers.ListAsync(MachineLabels(spec.MachineId), cancellationToken).ConfigureAwait(false);
            if (recordedState is null || recorded is null)
            {
                foreach (var container in containers)
                {
                    await _containers.RemoveAsync(container.Id, cancellationToken).ConfigureAwait(false);
                    PodmanLog.OrphanContainerRemoved(_logger, spec.MachineId, container.Id, "the daemon died while preparing it");
                }

                await RemoveSnapshotImagesAsync(machineId => machineId == spec.MachineId, cancellationToken).ConfigureAwait(false);
                return null;
            }

            var found = containers.FirstOrDefault(c => c.Id == recorded.ContainerId) ?? (containers.Count > 0 ? containers[0] : null);
            var status = found is null ? null : await _containers.InspectAsync(found.Id, cancellationToken).ConfigureAwait(false);
            if (status is null)
            {
                PodmanLog.GoneAfterRestart(_logger, spec.MachineId, recordedState.Value.ToWire());
                await RemoveSnapshotImagesAsync(machineId => machineId == spec.MachineId, cancellationToken).ConfigureAwait(false);
                return null;
            }

            var address = IPAddress.Parse(spec.Template.SshHost);
            var keys = spec.Template.KnownHostKeys.Count > 0 ? []
                : MakesMachineKey(spec) && HostKeyFiles.TryRead(spec.WorkDirectory) is { } machineKey ? [machineKey]
                : recorded.HostKeys is { } lines ? lines.Select(l => Ssh.HostKey.TryParse(l, out _)).OfType<Ssh.HostKey>().ToList()
                : await DiscoverHostKeysAsync(spec, status.Id, recorded.ImageId, cancellationToken).ConfigureAwait(false);
            var machine = new PodmanMachine(spec, ContainerSpecOf(spec, recorded.ImageId, address), status.Id, recorded.FromCommittedVersion, keys,
                KeySource(spec), _containers, _images, _exits, _store, _logger);
            machine.TakeBack(status.Running);
            PodmanLog.TakenBack(_logger, spec.MachineId, status.Id, status.Status);
            return new ReattachedMachine(machine, status.Running);
        }
        catch (PodmanApiException e)
        {
            throw new BackendOperationException($"podman could not take back machine {spec.MachineId}: {e.Message}", e);
        }
    }

    /// <summary>
    /// Removes the containers carrying this daemon's instance label whose machine it has no record of, and the snapshot
    /// images of such machines. Template versions and base images are never touched. An unreachable engine is logged,
    /// not fatal: the daemon still starts, and the next start tries again.
    /// </summary>
    public async Task RemoveOrphansAsync(IReadOnlySet<string> knownMachineIds, CancellationToken cancellationToken)
    {
        try
        {
            var containers = await _containers.ListAsync(new Dictionary<string, string>
            {
                [PodmanLabels.Instance] = _store.Naming.Instance,
            }, cancellationToken).ConfigureAwait(false);
            foreach (var container in containers)
            {
                var machineId = container.Labels.GetValueOrDefault(PodmanLabels.Machine);
                if (machineId is null || !knownMachineIds.Contains(machineId))
                {
                    await _containers.RemoveAsync(container.Id, cancellationToken).ConfigureAwait(false);
                    PodmanLog.OrphanContainerRemoved(_logger, machineId ?? "(none)", container.Id, "not recorded");
                }
            }

            await RemoveSnapshotImagesAsync(machineId => !knownMachineIds.Contains(machineId), cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is PodmanApiException or BackendUnavailableException)
        {
            PodmanLog.OrphanRemovalFailed(_logger, e.Message);
        }
    }

    /// <summary>Removes this daemon's snapshot images of the machines <paramref name="belongsToRemoved"/> picks, newest first (a snapshot of a restored machine is the child of an older one).</summary>
    private async Task RemoveSnapshotImagesAsync(Func<string, bool> belongsToRemoved, CancellationToken cancellationToken)
    {
        var snapshots = await _images.ListAsync(new Dictionary<string, string>
        {
            [PodmanLabels.Instance] = _store.Naming.Instance,
            [PodmanLabels.ImageKind] = PodmanLabels.SnapshotKind,
        }, cancellationToken).ConfigureAwait(false);
        foreach (var image in snapshots.OrderByDescending(i => i.Created))
        {
            var machineId = image.Labels.GetValueOrDefault(PodmanLabels.Machine) ?? string.Empty;
            if (!belongsToRemoved(machineId))
            {
                continue;
            }

            try
            {
                await _images.RemoveAsync(image.Id, force: true, cancellationToken).ConfigureAwait(false);
                PodmanLog.OrphanImageRemoved(_logger, machineId, string.Join(", ", image.Tags.DefaultIfEmpty(image.Id)));
            }
            catch (PodmanApiException e)
            {
                PodmanLog.OperationFailed(_logger, machineId, $"removing snapshot image {image.Id}", e.Message);
            }
        }
    }

    private Dictionary<string, string> MachineLabels(string machineId) => new(StringComparer.Ordinal)
    {
        [PodmanLabels.Instance] = _store.Naming.Instance,
        [PodmanLabels.Machine] = machineId,
    };

    /// <summary>A handle this version cannot read counts as none: the machine is cleaned up rather than half taken back.</summary>
    private static PodmanHandle? ReadHandle(string? handle)
    {
        if (handle is null)
        {
            return null;
        }

        try
        {
            return JsonSerializer.Deserialize<PodmanHandle>(handle) is { ContainerId.Length: > 0, ImageId.Length: > 0 } read ? read : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    /// <summary>Whether the machine gets a host key of its own: the template pins none and asks for none from the image.</summary>
    private static bool MakesMachineKey(MachineSpec spec) =>
        spec.Template.KnownHostKeys.Count == 0 && ((PodmanTemplateOptions)spec.Template.BackendOptions).HostKey == HostKeySources.Machine;

    private static string KeySource(MachineSpec spec) => MakesMachineKey(spec) ? HostKeySources.Machine : HostKeySources.Image;

    /// <summary>
    /// The machine's container: named after it, labelled, port 22 on its SSH port, and (see <see cref="MakesMachineKey"/>) its own
    /// host key mounted read-only over the image's ed25519 key, where sshd looks by default. A mount is no part of the container's
    /// files, so a snapshot or commit never carries the key. Prepare and a restart build the same one.
    /// </summary>
    private ContainerSpec ContainerSpecOf(MachineSpec spec, string imageId, IPAddress address)
    {
        var options = (PodmanTemplateOptions)spec.Template.BackendOptions;
        IReadOnlyList<string> keyBinds = MakesMachineKey(spec)
            ?
            [
                $"{HostKeyFiles.PrivateKeyPath(spec.WorkDirectory)}:{MachineKeyPath}:ro",
                $"{HostKeyFiles.PublicKeyPath(spec.WorkDirectory)}:{MachineKeyPath}.pub:ro",
            ]
            : [];
        return new ContainerSpec(spec.MachineId, imageId, PodmanLabels.Of(_store.Naming.Instance, spec), address.ToString())
        {
            Ports = [("22/tcp", spec.SshPort.ToString(System.Globalization.CultureInfo.InvariantCulture)), .. options.Publish],
            Environment = options.Environment,
            Binds = [.. options.Volumes, .. keyBinds],
            LogMaxBytes = spec.ConsoleMaxBytes,
            Devices = options.Devices,
            MemoryBytes = options.MemoryBytes,
            NanoCpus = options.NanoCpus,
        };
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
}
