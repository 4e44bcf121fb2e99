using System.Collections.Concurrent;
using System.Text;
using Falk.Core.Backends.Podman.Engine;
using Falk.Core.Config;
using Falk.Core.Machines;
using Falk.Core.Ssh;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Backends.Podman;

/// <summary>
/// The images of each podman template: which one is current (the <c>:current</c> tag after a commit, else
/// <c>base_image</c>), publishing a new version, removing versions no machine uses, and the host keys inside them.
/// </summary>
public sealed class PodmanImageStore(IPodmanImages images, IPodmanContainers containers, PodmanNaming naming, ILogger<PodmanImageStore> logger)
{
    /// <summary>Where images keep their host keys, in order of preference.</summary>
    public static readonly IReadOnlyList<string> HostKeyPaths =
    [
        "/etc/ssh/ssh_host_ed25519_key.pub",
        "/etc/ssh/ssh_host_ecdsa_key.pub",
        "/etc/ssh/ssh_host_rsa_key.pub",
    ];

    /// <summary>Image ids name content, so what was read from one never changes.</summary>
    private readonly ConcurrentDictionary<string, IReadOnlyList<HostKey>> _hostKeys = new(StringComparer.Ordinal);

    /// <summary>Containers being created from a template's current image; old versions are not removed meanwhile.</summary>
    private int _creating;

    public PodmanNaming Naming => naming;

    /// <summary>The image a new machine of <paramref name="template"/> starts from: its reference and its id.</summary>
    public async Task<(string Reference, string ImageId)> CurrentAsync(TemplateDefinition template, CancellationToken cancellationToken)
    {
        var current = $"{naming.TemplateRepository(template.Id)}:{PodmanNaming.CurrentTag}";
        if (await images.IdOfAsync(current, cancellationToken).ConfigureAwait(false) is { } committed)
        {
            return (current, committed);
        }

        var baseImage = ((PodmanTemplateOptions)template.BackendOptions).BaseImage;
        var id = await images.IdOfAsync(baseImage, cancellationToken).ConfigureAwait(false)
            ?? throw new BackendOperationException($"template '{template.Name}': base_image {baseImage} is not in podman's image storage (Falk does not pull images)");
        return (baseImage, id);
    }

    /// <summary>Marks a container creation from a current image; dispose when the container exists.</summary>
    public IDisposable BeginCreate()
    {
        Interlocked.Increment(ref _creating);
        return new Release(() => Interlocked.Decrement(ref _creating));
    }

    /// <summary>
    /// The host keys of <paramref name="imageId"/>, read through the API from <paramref name="containerId"/> (a container of
    /// that image, which need not have run): the first of <see cref="HostKeyPaths"/> that exists.
    /// </summary>
    public async Task<IReadOnlyList<HostKey>> HostKeysAsync(string containerId, string imageId, CancellationToken cancellationToken)
    {
        if (_hostKeys.TryGetValue(imageId, out var known))
        {
            return known;
        }

        IReadOnlyList<HostKey> keys = [];
        foreach (var path in HostKeyPaths)
        {
            var content = await containers.ReadFileAsync(containerId, path, cancellationToken).ConfigureAwait(false);
            if (content is null)
            {
                continue;
            }

            var parsed = HostKey.ParseMany(Encoding.UTF8.GetString(content), out var problem);
            if (problem is null && parsed.Count > 0)
            {
                keys = parsed;
                break;
            }
        }

        _hostKeys[imageId] = keys;
        return keys;
    }

    /// <summary>
    /// Commits a stopped management container as a new version of <paramref name="template"/> and moves the
    /// template's <c>:current</c> tag to it (one atomic tag move: a failure before it leaves the old version in force).
    /// </summary>
    public async Task<CommitResult> PublishAsync(string containerId, string machineId, TemplateDefinition template, CancellationToken cancellationToken)
    {
        var repository = naming.TemplateRepository(template.Id);
        var version = PodmanNaming.NewVersion(DateTimeOffset.UtcNow);
        var imageId = await images.CommitAsync(containerId, repository, version, new Dictionary<string, string>
        {
            [PodmanLabels.Instance] = naming.Instance,
            [PodmanLabels.Template] = template.Id,
            [PodmanLabels.ImageKind] = PodmanLabels.VersionKind,
            [PodmanLabels.Version] = version,
        }, cancellationToken).ConfigureAwait(false);
        await images.TagAsync(imageId, repository, PodmanNaming.CurrentTag, cancellationToken).ConfigureAwait(false);
        PodmanLog.TemplateSwitched(logger, machineId, template.Name, $"{repository}:{version}", imageId);
        await RemoveUnusedVersionsAsync(template, cancellationToken).ConfigureAwait(false);
        return new CommitResult(version);
    }

    /// <summary>
    /// Removes the template's committed versions other than the current one that no container uses (the engine
    /// refuses those that are in use; they go at a later call). The base image is never touched.
    /// </summary>
    public async Task RemoveUnusedVersionsAsync(TemplateDefinition template, CancellationToken cancellationToken)
    {
        if (Volatile.Read(ref _creating) > 0)
        {
            return;
        }

        var repository = naming.TemplateRepository(template.Id);
        var currentId = await images.IdOfAsync($"{repository}:{PodmanNaming.CurrentTag}", cancellationToken).ConfigureAwait(false);
        var versions = await images.ListAsync(new Dictionary<string, string>
        {
            [PodmanLabels.Instance] = naming.Instance,
            [PodmanLabels.Template] = template.Id,
            [PodmanLabels.ImageKind] = PodmanLabels.VersionKind,
        }, cancellationToken).ConfigureAwait(false);
        foreach (var image in versions.Where(i => i.Id != currentId))
        {
            foreach (var tag in image.Tags.Where(t => t.StartsWith(repository + ":", StringComparison.Ordinal)))
            {
                try
                {
                    await images.RemoveAsync(tag, force: false, cancellationToken).ConfigureAwait(false);
                    PodmanLog.OldImageRemoved(logger, template.Name, tag);
                }
                catch (PodmanApiException e)
                {
                    PodmanLog.OldImageKept(logger, template.Name, tag, e.EngineMessage);
                }
            }
        }
    }

    private sealed class Release(Action release) : IDisposable
    {
        private int _done;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _done, 1) == 0)
            {
                release();
            }
        }
    }
}
