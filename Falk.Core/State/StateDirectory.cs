using Falk.Core.Config;
using Falk.Core.Unix;

namespace Falk.Core.State;

/// <summary>
/// The daemon's hold on its <c>state_dir</c>: the folder is the daemon user's alone (0700) and an exclusive lock on
/// <c>falk.lock</c> in it keeps a second falkd from "recovering" the first one's machines. Dispose to release.
/// </summary>
public sealed class StateDirectory : IDisposable
{
    public const string LockFileName = "falk.lock";

    private static readonly UnixFileMode Private = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    private readonly FileStream _lock;

    private StateDirectory(FileStream lockFile) => _lock = lockFile;

    /// <summary>
    /// Makes or tightens the folder and takes the lock. Throws <see cref="ConfigException"/> with one readable line
    /// when the folder is not the daemon user's or another falkd holds it.
    /// </summary>
    public static StateDirectory Claim(string path)
    {
        if (UnixFiles.Stat(path).Kind == NodeKind.Missing)
        {
            Directory.CreateDirectory(path, Private);
        }

        var status = UnixFiles.Stat(path);
        if (status.Kind != NodeKind.Directory)
        {
            throw new ConfigException([$"state_dir {path} is not a folder"]);
        }

        if (status.Uid != UnixAccounts.EffectiveUid)
        {
            throw new ConfigException([$"state_dir {path} belongs to uid {status.Uid}, not to the daemon's user (uid {UnixAccounts.EffectiveUid}); refusing to keep machines where someone else can change them"]);
        }

        if (status.Mode != Private)
        {
            File.SetUnixFileMode(path, Private);
        }

        var lockPath = Path.Combine(path, LockFileName);
        FileStream lockFile;
        try
        {
            // FileShare.None takes flock(LOCK_EX | LOCK_NB); the descriptor is close-on-exec, so machines that
            // outlive the daemon never keep the lock from its successor.
            lockFile = new FileStream(lockPath, new FileStreamOptions
            {
                Mode = FileMode.OpenOrCreate,
                Access = FileAccess.ReadWrite,
                Share = FileShare.None,
                UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
            });
        }
        catch (IOException)
        {
            throw new ConfigException([$"another falkd already uses state_dir {path}; stop it first or give this one another state_dir"]);
        }

        return new StateDirectory(lockFile);
    }

    public void Dispose() => _lock.Dispose();
}
