using Falk.Core.Backends.Podman.Engine;
using Falk.Core.Machines;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Backends.Podman;

/// <summary>
/// The snapshots of one podman machine: images committed from its container, labelled with the machine and the
/// snapshot's name. A restore replaces the serving container by one made from the snapshot, with the same spec.
/// </summary>
internal sealed class PodmanSnapshots(
    MachineSpec spec,
    ContainerSpec containerSpec,
    PodmanServingContainer serving,
    IPodmanContainers containers,
    IPodmanImages images,
    PodmanNaming naming,
    PodmanEngineCalls engine,
    ILogger logger)
{
    // Set once a snapshot may exist, so cleanup knows it has images to look for.
    private volatile bool _made;

    /// <summary>Snapshots may exist that this daemon did not make (a machine taken back after a restart).</summary>
    public void MayExist() => _made = true;

    public async Task<SnapshotInfo> CreateAsync(string name, CancellationToken cancellationToken)
    {
        var id = serving.Id;
        _made = true;
        return await engine.RunAsync("snapshot", async () =>
        {
            var imageId = await images.CommitAsync(id, naming.SnapshotRepository(spec.MachineId), PodmanNaming.SnapshotTag(name), new Dictionary<string, string>
            {
                [PodmanLabels.Instance] = naming.Instance,
                [PodmanLabels.Machine] = spec.MachineId,
                [PodmanLabels.Template] = spec.Template.Id,
                [PodmanLabels.ImageKind] = PodmanLabels.SnapshotKind,
                [PodmanLabels.Snapshot] = name,
            }, cancellationToken).ConfigureAwait(false);
            PodmanLog.SnapshotCommitted(logger, spec.MachineId, name, imageId);
            var made = (await ImagesAsync(cancellationToken).ConfigureAwait(false)).FirstOrDefault(s => s.Info.Name == name);
            return made?.Info ?? new SnapshotInfo(name, DateTimeOffset.UtcNow, null, IncludesMemory: false);
        }).ConfigureAwait(false);
    }

    public Task<IReadOnlyList<SnapshotInfo>> ListAsync(CancellationToken cancellationToken) =>
        engine.RunAsync<IReadOnlyList<SnapshotInfo>>("list snapshots", async () =>
            (await ImagesAsync(cancellationToken).ConfigureAwait(false)).Select(s => s.Info).ToList());

    /// <summary>
    /// Replaces the container by one made from the snapshot, with the same name, labels and ports; a running machine
    /// runs on, from the snapshot.
    /// </summary>
    public Task RestoreAsync(string name, CancellationToken cancellationToken) =>
        engine.RunAsync("restore snapshot", async () =>
        {
            var snapshot = await FindAsync(name, cancellationToken).ConfigureAwait(false);
            var old = serving.Id;
            var wasRunning = (await containers.InspectAsync(old, cancellationToken).ConfigureAwait(false))?.Running == true;

            var replacement = serving.BeginReplacement();
            try
            {
                await containers.RemoveAsync(old, cancellationToken).ConfigureAwait(false);
                var created = await containers.CreateAsync(containerSpec with { Image = snapshot.ImageId }, cancellationToken).ConfigureAwait(false);
                serving.ReplaceWith(created);
                if (wasRunning)
                {
                    await containers.StartAsync(created, cancellationToken).ConfigureAwait(false);
                }

                PodmanLog.SnapshotRestored(logger, spec.MachineId, created, name);
            }
            finally
            {
                replacement.TrySetResult();
            }
        });

    /// <summary>Removes the snapshot's image; podman refuses while the container runs from it (after a restore).</summary>
    public Task DeleteAsync(string name, CancellationToken cancellationToken) =>
        engine.RunAsync("delete snapshot", async () =>
        {
            var snapshot = await FindAsync(name, cancellationToken).ConfigureAwait(false);
            await images.RemoveAsync(snapshot.Reference, force: false, cancellationToken).ConfigureAwait(false);
        });

    /// <summary>Removes every snapshot image of the machine, once its container is gone. Engine refusals are the caller's.</summary>
    public async Task RemoveAllAsync(CancellationToken cancellationToken)
    {
        if (!_made)
        {
            return;
        }

        foreach (var snapshot in await ImagesAsync(cancellationToken).ConfigureAwait(false))
        {
            await images.RemoveAsync(snapshot.Reference, force: true, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task<SnapshotImage> FindAsync(string name, CancellationToken cancellationToken) =>
        (await ImagesAsync(cancellationToken).ConfigureAwait(false)).FirstOrDefault(s => s.Info.Name == name)
            ?? throw new SnapshotNotFoundException(spec.MachineId, name);

    private async Task<IReadOnlyList<SnapshotImage>> ImagesAsync(CancellationToken cancellationToken)
    {
        var repository = naming.SnapshotRepository(spec.MachineId);
        var found = await images.ListAsync(new Dictionary<string, string>
        {
            [PodmanLabels.Instance] = naming.Instance,
            [PodmanLabels.Machine] = spec.MachineId,
            [PodmanLabels.ImageKind] = PodmanLabels.SnapshotKind,
        }, cancellationToken).ConfigureAwait(false);
        return found
            .Where(i => i.Labels.ContainsKey(PodmanLabels.Snapshot))
            .Select(i => (Image: i, Name: i.Labels[PodmanLabels.Snapshot]))
            .Select(x => (x.Image, x.Name, Reference: $"{repository}:{PodmanNaming.SnapshotTag(x.Name)}"))
            .Where(x => x.Image.Tags.Contains(x.Reference))
            .Select(x => new SnapshotImage(new SnapshotInfo(x.Name, x.Image.Created, x.Image.Size, IncludesMemory: false), x.Image.Id, x.Reference))
            .OrderBy(s => s.Info.CreatedAt)
            .ToList();
    }

    private sealed record SnapshotImage(SnapshotInfo Info, string ImageId, string Reference);
}
