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

    /// <summary>Raised after a commit switched <c>current</c> to a new version.</summary>
    public event EventHandler? Committed;

    public string VersionsDirectory { get; }

    private string CurrentLink => Path.Combine(VersionsDirectory, CurrentLinkName);

    [GeneratedRegex(@"^v([0-9]{1,9})\.qcow2$")]
    private static partial Regex VersionFileName();

    /// <summary><c>VERSIONFILE.resume-KEY-RANDOM.qcow2</c> (the disk layer a guest was saved with) and <c>….vmstate</c> (its memory and devices).</summary>
    [GeneratedRegex(@"^(.+)\.resume-([0-9a-f]{16})-([0-9a-f]{8})\.(qcow2|vmstate)$")]
    private static partial Regex ResumeFileName();

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
            CreateVersionsDirectory();
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

            Committed?.Invoke(this, EventArgs.Empty);
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

    /// <summary>Paths (without extension) for a new saved guest of <paramref name="version"/> and command <paramref name="key"/>; the folder exists.</summary>
    public string NewResumeStem(string version, string key)
    {
        CreateVersionsDirectory();
        return Path.Combine(VersionsDirectory, $"{Path.GetFileName(version)}.resume-{key}-{Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(4))}");
    }

    /// <summary>
    /// The saved guest of <paramref name="version"/> for command <paramref name="key"/>, its layer counted as used (as by
    /// <see cref="Acquire"/>) until <see cref="Release"/>; null when none is saved.
    /// </summary>
    public QemuResumeState? AcquireResumeState(string version, string key)
    {
        lock (_lock)
        {
            if (!Directory.Exists(VersionsDirectory))
            {
                return null;
            }

            var state = Directory.EnumerateFiles(VersionsDirectory, $"{Path.GetFileName(version)}.resume-{key}-*.vmstate")
                .Where(p => ResumeFileName().IsMatch(Path.GetFileName(p)) && File.Exists(Path.ChangeExtension(p, ".qcow2")))
                .OrderByDescending(File.GetLastWriteTimeUtc)
                .FirstOrDefault();
            if (state is null)
            {
                return null;
            }

            var layer = Path.ChangeExtension(state, ".qcow2");
            _uses[layer] = _uses.GetValueOrDefault(layer) + 1;
            return new QemuResumeState(version, layer, state);
        }
    }

    /// <summary>Moves a saved guest's files into place (the layer first, the state last: a state is ready only beside its layer).</summary>
    public void PublishResumeState(string layerPartial, string statePartial, QemuResumeState state)
    {
        // The saving QEMU's user wrote the layer; every clone reads it, so no QEMU may write it again.
        _confinement?.ShareImage(layerPartial, folder: false, reclaim: true);
        lock (_lock)
        {
            File.Move(layerPartial, state.Layer, overwrite: false);
            File.Move(statePartial, state.State, overwrite: false);
        }

        FileSync.Folder(VersionsDirectory);
    }

    /// <summary>A saved guest that did not load: its state goes now, its layer once no machine uses it.</summary>
    public void DiscardResumeState(QemuResumeState state)
    {
        lock (_lock)
        {
            DeleteQuietly(state.State);
            QemuLog.ResumeStateRemoved(_logger, BaseImage, state.State);
            RemoveUnused();
        }
    }

    /// <summary>The versions folder, made if missing; QEMU's group may pass through it to read the versions and layers.</summary>
    private void CreateVersionsDirectory()
    {
        Directory.CreateDirectory(VersionsDirectory);
        _confinement?.ShareImage(VersionsDirectory, folder: true);
    }

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

        // A saved guest goes with its version; a layer stays while a machine resumed from it runs on it.
        foreach (var path in Directory.EnumerateFiles(VersionsDirectory))
        {
            var resume = ResumeFileName().Match(Path.GetFileName(path));
            if (!resume.Success)
            {
                continue;
            }

            var version = resume.Groups[1].Value == Path.GetFileName(BaseImage) ? BaseImage : Path.Combine(VersionsDirectory, resume.Groups[1].Value);
            var versionInUse = version == current || _uses.ContainsKey(version);
            var remove = resume.Groups[4].Value == "vmstate"
                ? !versionInUse
                : !_uses.ContainsKey(path) && (!versionInUse || !File.Exists(Path.ChangeExtension(path, ".vmstate")));
            if (remove)
            {
                DeleteQuietly(path);
                QemuLog.ResumeStateRemoved(_logger, BaseImage, path);
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

/// <summary>A running guest of image <paramref name="Version"/> saved by Falk: the disk layer it ran on (backed by the version) and its memory and devices.</summary>
public sealed record QemuResumeState(string Version, string Layer, string State);
