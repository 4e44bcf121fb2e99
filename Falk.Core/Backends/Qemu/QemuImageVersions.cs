using System.Globalization;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Backends.Qemu;

/// <summary>
/// The image versions of one <c>base_image</c>. Versions are standalone qcow2 files <c>BASE.falk-versions/vN.qcow2</c>;
/// the symlink <c>current</c> in that folder names the one in force and is switched by a rename, so a reader sees the
/// old version or the new one, never a half. Without a <c>current</c> link the configured <c>base_image</c> is version 0
/// (and is never deleted). Overlays are made on the exact version file, so machines made before a commit keep theirs;
/// a version file is deleted once it is not current and no machine of this daemon uses it.
/// </summary>
public sealed partial class QemuImageVersions : IDisposable
{
    /// <summary>Files being written carry this suffix until they are complete; any found at start are remains of a crash.</summary>
    public const string PartialSuffix = ".falk-partial";

    private const string CurrentLinkName = "current";

    private readonly QemuImg _qemuImg;
    private readonly ILogger _logger;
    private readonly Lock _lock = new();
    private readonly SemaphoreSlim _commit = new(1, 1);
    private readonly Dictionary<string, int> _uses = new(StringComparer.Ordinal);

    private readonly QemuConfinement? _confinement;

    /// <param name="confinement">Whose QEMU reads the versions: they are made readable by its user's group.</param>
    public QemuImageVersions(string baseImage, QemuImg qemuImg, ILogger logger, QemuConfinement? confinement = null)
    {
        BaseImage = baseImage;
        VersionsDirectory = baseImage + ".falk-versions";
        _qemuImg = qemuImg;
        _logger = logger;
        _confinement = confinement;
    }

    public string BaseImage { get; }

    public string VersionsDirectory { get; }

    private string CurrentLink => Path.Combine(VersionsDirectory, CurrentLinkName);

    [GeneratedRegex(@"^v([0-9]{1,9})\.qcow2$")]
    private static partial Regex VersionFileName();

    /// <summary>The absolute path of the version in force.</summary>
    public string Current
    {
        get
        {
            var target = new FileInfo(CurrentLink).LinkTarget;
            return target is null ? BaseImage : Path.GetFullPath(target, VersionsDirectory);
        }
    }

    /// <summary>The version in force, counted as used until <see cref="Release"/>: it is not deleted meanwhile.</summary>
    public string Acquire()
    {
        lock (_lock)
        {
            var current = Current;
            _uses[current] = _uses.GetValueOrDefault(current) + 1;
            return current;
        }
    }

    /// <summary>
    /// After a daemon restart: a machine taken back uses <paramref name="version"/> (its overlay's backing file), counted
    /// as by <see cref="Acquire"/> so that it is not deleted until the machine releases it.
    /// </summary>
    public void Adopt(string version)
    {
        lock (_lock)
        {
            _uses[version] = _uses.GetValueOrDefault(version) + 1;
        }
    }

    /// <summary>Deletes the versions that are neither current nor used; after a restart, once every machine is taken back.</summary>
    public void RemoveUnusedVersions()
    {
        lock (_lock)
        {
            RemoveUnused();
        }
    }

    /// <summary>A machine no longer uses <paramref name="version"/>; it is deleted if nothing else does and it is not current.</summary>
    public void Release(string version)
    {
        lock (_lock)
        {
            if (_uses.TryGetValue(version, out var count))
            {
                if (count <= 1)
                {
                    _uses.Remove(version);
                }
                else
                {
                    _uses[version] = count - 1;
                }
            }

            RemoveUnused();
        }
    }

    /// <summary>
    /// Merges <paramref name="overlay"/> and its backing chain into a new version file, flushes it to disk, renames it into
    /// place and then switches <c>current</c> to it with one rename. Until that last rename the previous version is in force;
    /// a failure removes what was written. Returns the version's name (<c>vN</c>).
    /// </summary>
    public async Task<string> CommitAsync(string overlay, string machineId, CancellationToken cancellationToken)
    {
        await _commit.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            Directory.CreateDirectory(VersionsDirectory);
            _confinement?.ShareImage(VersionsDirectory, folder: true);
            var number = NextNumber();
            var name = $"v{number.ToString(CultureInfo.InvariantCulture)}";
            var final = Path.Combine(VersionsDirectory, name + ".qcow2");
            var partial = final + "." + machineId + PartialSuffix;
            var partialLink = CurrentLink + "." + machineId + PartialSuffix;
            try
            {
                await _qemuImg.ConvertAsync(overlay, partial, cancellationToken).ConfigureAwait(false);
                _confinement?.ShareImage(partial, folder: false);
                FileSync.File(partial);
                File.Move(partial, final, overwrite: false);
                FileSync.Folder(VersionsDirectory);

                File.CreateSymbolicLink(partialLink, Path.GetFileName(final));
                File.Move(partialLink, CurrentLink, overwrite: true);
                FileSync.Folder(VersionsDirectory);
            }
            catch
            {
                DeleteQuietly(partial);
                DeleteQuietly(partialLink);
                if (Current != final)
                {
                    DeleteQuietly(final);
                }

                throw;
            }

            QemuLog.VersionCommitted(_logger, BaseImage, name, final, machineId);
            lock (_lock)
            {
                RemoveUnused();
            }

            return name;
        }
        finally
        {
            _commit.Release();
        }
    }

    /// <summary>Removes the remains of commits that were interrupted (by a crash or kill of the daemon).</summary>
    public void RemovePartials()
    {
        if (!Directory.Exists(VersionsDirectory))
        {
            return;
        }

        foreach (var path in Directory.EnumerateFileSystemEntries(VersionsDirectory, "*" + PartialSuffix))
        {
            DeleteQuietly(path);
            QemuLog.PartialRemoved(_logger, BaseImage, path);
        }
    }

    /// <summary>Makes the versions folder and every version in it readable by QEMU's user (versions made by an earlier daemon).</summary>
    public void Share()
    {
        if (_confinement is null || !Directory.Exists(VersionsDirectory))
        {
            return;
        }

        _confinement.ShareImage(VersionsDirectory, folder: true);
        foreach (var path in Directory.EnumerateFiles(VersionsDirectory).Where(f => VersionFileName().IsMatch(Path.GetFileName(f))))
        {
            _confinement.ShareImage(path, folder: false);
        }
    }

    public void Dispose() => _commit.Dispose();

    private int NextNumber() =>
        Directory.EnumerateFiles(VersionsDirectory)
            .Select(f => VersionFileName().Match(Path.GetFileName(f)))
            .Where(m => m.Success)
            .Select(m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture))
            .DefaultIfEmpty(0)
            .Max() + 1;

    /// <summary>Deletes version files that are neither current nor used by a machine. The configured base image is never touched.</summary>
    private void RemoveUnused()
    {
        if (!Directory.Exists(VersionsDirectory))
        {
            return;
        }

        var current = Current;
        foreach (var path in Directory.EnumerateFiles(VersionsDirectory))
        {
            if (VersionFileName().IsMatch(Path.GetFileName(path)) && path != current && !_uses.ContainsKey(path))
            {
                DeleteQuietly(path);
                QemuLog.VersionRemoved(_logger, BaseImage, path);
            }
        }
    }

    private void DeleteQuietly(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            QemuLog.RemoveFailed(_logger, BaseImage, path, e);
        }
    }
}
