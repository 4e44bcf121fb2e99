using Docker.DotNet.Models;

namespace Falk.Core.Backends.Podman.Engine;

/// <summary>An image as the engine lists it.</summary>
public sealed record ImageSummary(string Id, IReadOnlyList<string> Tags, IReadOnlyDictionary<string, string> Labels, DateTimeOffset Created, long Size);

/// <summary>Images, as Falk uses them. Every call takes a token; an image that is not there is a result, not an error.</summary>
public interface IPodmanImages
{
    /// <summary>The image's id (<c>sha256:…</c>), or null when <paramref name="reference"/> names no image.</summary>
    Task<string?> IdOfAsync(string reference, CancellationToken cancellationToken);

    /// <summary>Commits a container to <paramref name="repository"/>:<paramref name="tag"/>, with extra labels; returns the new image's id.</summary>
    Task<string> CommitAsync(string containerId, string repository, string tag, IReadOnlyDictionary<string, string> labels, CancellationToken cancellationToken);

    /// <summary>Points <paramref name="repository"/>:<paramref name="tag"/> at <paramref name="image"/>, moving it if it exists (atomic in the engine).</summary>
    Task TagAsync(string image, string repository, string tag, CancellationToken cancellationToken);

    /// <summary>Removes a tag (and the image with its last tag). False when it was gone; <see cref="PodmanApiException.IsConflict"/> when a container uses it.</summary>
    Task<bool> RemoveAsync(string reference, bool force, CancellationToken cancellationToken);

    Task<IReadOnlyList<ImageSummary>> ListAsync(IReadOnlyDictionary<string, string> labels, CancellationToken cancellationToken);
}

internal sealed class PodmanImages(PodmanEngine engine) : IPodmanImages
{
    public async Task<string?> IdOfAsync(string reference, CancellationToken cancellationToken)
    {
        try
        {
            var image = await engine.CallAsync($"inspect image {reference}",
                (client, ct) => client.Images.InspectImageAsync(reference, ct), cancellationToken).ConfigureAwait(false);
            return image.ID;
        }
        catch (PodmanApiException e) when (e.IsNotFound)
        {
            return null;
        }
    }

    public async Task<string> CommitAsync(string containerId, string repository, string tag, IReadOnlyDictionary<string, string> labels, CancellationToken cancellationToken)
    {
        // Podman 4.3's compat commit ignores the Labels field; Dockerfile-style changes do work.
        var parameters = new CommitContainerChangesParameters
        {
            ContainerID = containerId,
            RepositoryName = repository,
            Tag = tag,
            Pause = true,
            Changes = labels.Select(l => $"LABEL {l.Key}={l.Value}").ToList(),
        };
        var committed = await engine.CallAsync($"commit container {containerId} to {repository}:{tag}",
            (client, ct) => client.Images.CommitContainerChangesAsync(parameters, ct), cancellationToken).ConfigureAwait(false);
        return committed.ID.StartsWith("sha256:", StringComparison.Ordinal) ? committed.ID : "sha256:" + committed.ID;
    }

    public Task TagAsync(string image, string repository, string tag, CancellationToken cancellationToken) =>
        engine.CallAsync($"tag {image} as {repository}:{tag}",
            (client, ct) => client.Images.TagImageAsync(image, new ImageTagParameters { RepositoryName = repository, Tag = tag }, ct),
            cancellationToken);

    public async Task<bool> RemoveAsync(string reference, bool force, CancellationToken cancellationToken)
    {
        try
        {
            await engine.CallAsync($"remove image {reference}",
                (client, ct) => client.Images.DeleteImageAsync(reference, new ImageDeleteParameters { Force = force }, ct), cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (PodmanApiException e) when (e.IsNotFound)
        {
            return false;
        }
    }

    public async Task<IReadOnlyList<ImageSummary>> ListAsync(IReadOnlyDictionary<string, string> labels, CancellationToken cancellationToken)
    {
        var parameters = new ImagesListParameters { Filters = LabelFilter.Of(labels) };
        var images = await engine.CallAsync("list images",
            (client, ct) => client.Images.ListImagesAsync(parameters, ct), cancellationToken).ConfigureAwait(false);
        return images
            .Select(i => new ImageSummary(i.ID, i.RepoTags?.ToList() ?? [],
                (IReadOnlyDictionary<string, string>?)i.Labels?.ToDictionary() ?? new Dictionary<string, string>(),
                new DateTimeOffset(DateTime.SpecifyKind(i.Created, DateTimeKind.Utc)), i.Size))
            .Where(i => LabelFilter.Matches(i.Labels, labels))
            .ToList();
    }
}
