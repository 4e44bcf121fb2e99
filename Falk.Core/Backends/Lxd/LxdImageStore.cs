using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using Falk.Core.Config;
using Falk.Core.Machines;
using Falk.Core.Ssh;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Backends.Lxd;

/// <summary>
/// The images of each LXD template: which one is current (the alias <c>falk.INSTANCE.TEMPLATE</c> after a commit, else
/// <c>base_image</c>), publishing a new version and moving the alias to it, removing versions no machine uses, and the
/// host keys inside an image.
/// </summary>
public sealed class LxdImageStore(LxdClient client, string instance, ILogger logger)
{
    public const string KindProperty = "falk.kind";
    public const string VersionKind = "version";
    public const string InstanceProperty = "falk.instance";
    public const string TemplateProperty = "falk.template";
    public const string VersionProperty = "falk.version";

    /// <summary>Where images keep their host keys, in order of preference.</summary>
    public static readonly IReadOnlyList<string> HostKeyPaths =
    [
        "/etc/ssh/ssh_host_ed25519_key.pub",
        "/etc/ssh/ssh_host_ecdsa_key.pub",
        "/etc/ssh/ssh_host_rsa_key.pub",
    ];

    /// <summary>Fingerprints name content, so what was read from one never changes.</summary>
    private readonly ConcurrentDictionary<string, IReadOnlyList<HostKey>> _hostKeys = new(StringComparer.Ordinal);

    /// <summary>Instances being created from a template's current image; old versions are not removed meanwhile.</summary>
    private int _creating;

    public string Instance => instance;

    public string CurrentAlias(string template) => $"falk.{instance}.{template}";

    /// <summary>The image a new machine of <paramref name="template"/> starts from: how it is named and its fingerprint.</summary>
    public async Task<(string Reference, string Fingerprint)> CurrentAsync(TemplateDefinition template, CancellationToken cancellationToken)
    {
        var alias = CurrentAlias(template.Id);
        if (await client.AliasTargetAsync(alias, cancellationToken).ConfigureAwait(false) is { } committed)
        {
            return (alias, committed);
        }

        var baseImage = ((LxdTemplateOptions)template.BackendOptions).BaseImage;
        var fingerprint = await client.AliasTargetAsync(baseImage, cancellationToken).ConfigureAwait(false)
            ?? (await client.ImageAsync(baseImage, cancellationToken).ConfigureAwait(false))?.Fingerprint
            ?? throw new BackendOperationException(
                $"template '{template.Name}': base_image {baseImage} is neither an image alias nor a fingerprint in {client.Flavor.Product}'s image store (Falk downloads no images)");
        return (baseImage, fingerprint);
    }

    /// <summary>Marks an instance creation from a current image; dispose when the instance exists.</summary>
    public IDisposable BeginCreate()
    {
        Interlocked.Increment(ref _creating);
        return new Release(() => Interlocked.Decrement(ref _creating));
    }

    /// <summary>The host keys of image <paramref name="fingerprint"/>, read from <paramref name="instanceName"/> (made from it, need not run).</summary>
    public async Task<IReadOnlyList<HostKey>> HostKeysAsync(string instanceName, string fingerprint, CancellationToken cancellationToken)
    {
        if (_hostKeys.TryGetValue(fingerprint, out var known))
        {
            return known;
        }

        IReadOnlyList<HostKey> keys = [];
        foreach (var path in HostKeyPaths)
        {
            var content = await client.ReadFileAsync(instanceName, path, cancellationToken).ConfigureAwait(false);
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

        _hostKeys[fingerprint] = keys;
        return keys;
    }

    /// <summary>
    /// Publishes the stopped management instance as a new image of <paramref name="template"/> and moves the template's
    /// alias to it (one alias update: a failure before it leaves the old version in force).
    /// </summary>
    public async Task<CommitResult> PublishAsync(string instanceName, string machineId, TemplateDefinition template, CancellationToken cancellationToken)
    {
        var version = "v" + DateTimeOffset.UtcNow.UtcDateTime.ToString("yyyyMMdd-HHmmss-fff", CultureInfo.InvariantCulture);
        var fingerprint = await client.PublishAsync(instanceName, new Dictionary<string, string>
        {
            [InstanceProperty] = instance,
            [TemplateProperty] = template.Id,
            [KindProperty] = VersionKind,
            [VersionProperty] = version,
            ["description"] = $"Falk template {template.Name} {version}",
        }, cancellationToken).ConfigureAwait(false);
        var alias = CurrentAlias(template.Id);
        await client.SetAliasAsync(alias, fingerprint, $"Falk template {template.Name}: current version", cancellationToken).ConfigureAwait(false);
        LxdLog.TemplateSwitched(logger, machineId, template.Name, fingerprint, version, alias);
        await RemoveUnusedVersionsAsync(template, cancellationToken).ConfigureAwait(false);
        return new CommitResult(version);
    }

    /// <summary>
    /// Removes the template's committed versions other than the current one that no instance of this daemon was made
    /// from (their <c>user.falk.image</c>). The base image is never touched.
    /// </summary>
    public async Task RemoveUnusedVersionsAsync(TemplateDefinition template, CancellationToken cancellationToken)
    {
        if (Volatile.Read(ref _creating) > 0)
        {
            return;
        }

        var current = await client.AliasTargetAsync(CurrentAlias(template.Id), cancellationToken).ConfigureAwait(false);
        var used = (await client.InstancesAsync(cancellationToken).ConfigureAwait(false))
            .Select(i => i.ConfigValue(LxdMarks.Image))
            .OfType<string>()
            .ToHashSet(StringComparer.Ordinal);
        var versions = (await client.ImagesAsync(cancellationToken).ConfigureAwait(false))
            .Where(i => i.Property(InstanceProperty) == instance && i.Property(TemplateProperty) == template.Id && i.Property(KindProperty) == VersionKind);
        foreach (var image in versions.Where(i => i.Fingerprint != current && !used.Contains(i.Fingerprint)))
        {
            try
            {
                await client.DeleteImageAsync(image.Fingerprint, cancellationToken).ConfigureAwait(false);
                LxdLog.OldImageRemoved(logger, template.Name, image.Fingerprint);
            }
            catch (LxdApiException e)
            {
                LxdLog.OperationFailed(logger, "-", $"removing old image {image.Fingerprint} of template {template.Name}", e.DaemonMessage);
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

/// <summary>The <c>user.falk.*</c> config keys Falk puts on every instance it makes, so it can be found (and reaped) by them.</summary>
public static class LxdMarks
{
    public const string Instance = LxdFlavor.ConfigPrefix + "instance";
    public const string Machine = LxdFlavor.ConfigPrefix + "machine";
    public const string Template = LxdFlavor.ConfigPrefix + "template";
    public const string Owner = LxdFlavor.ConfigPrefix + "owner";
    public const string Manage = LxdFlavor.ConfigPrefix + "manage";

    /// <summary>The fingerprint of the image the instance was made from.</summary>
    public const string Image = LxdFlavor.ConfigPrefix + "image";

    /// <summary>A client's own labels (<c>POST /v1/machines {labels}</c>) are carried under this prefix.</summary>
    public const string LabelPrefix = LxdFlavor.ConfigPrefix + "label.";

    public static Dictionary<string, string> Of(string instance, MachineSpec spec, string fingerprint)
    {
        var marks = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [Instance] = instance,
            [Machine] = spec.MachineId,
            [Template] = spec.Template.Id,
            [Owner] = spec.OwnerUid.ToString(CultureInfo.InvariantCulture),
            [Manage] = spec.Manage ? "true" : "false",
            [Image] = fingerprint,
        };
        foreach (var (key, value) in spec.Labels)
        {
            marks[LabelPrefix + key] = value;
        }

        return marks;
    }
}
