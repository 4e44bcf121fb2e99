using System.Globalization;
using Falk.Core.Unix;

namespace Falk.Core.Backends.Qemu;

/// <summary>
/// How a machine's QEMU is confined to its user (<see cref="Account"/>; null: the daemon's own). The switch happens
/// before QEMU runs (<c>setpriv</c> in its argument list, which execs in place and so keeps the pid), because QEMU's own
/// <c>-runas</c> changes the uid after its seccomp filter is in force, which <c>elevateprivileges=deny</c> answers with
/// SIGSYS. The user owns only what QEMU writes: the machine's overlay and its QEMU folder (QMP and console sockets, pid
/// file). It may pass through the state folder down to the machine's work folder (the user's group, mode 0710:
/// traverse, not list) and read image versions (0640, the user's group). falk.db, console logs and keys stay the
/// daemon's alone, and nothing the daemon later opens by name lies in a folder QEMU's user may write to, except the
/// sockets it connects to.
/// </summary>
public sealed record QemuConfinement(QemuAccount? Account, string StateDirectory)
{
    private static readonly UnixFileMode Private = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    /// <summary>The command as QEMU's user: real, effective and saved ids switched, that user's supplementary groups (kvm).</summary>
    public IReadOnlyList<string> Wrap(IReadOnlyList<string> command) => Account is not { } account
        ? command
        :
        [
            "setpriv",
            "--reuid=" + account.Uid.ToString(CultureInfo.InvariantCulture),
            "--regid=" + account.Gid.ToString(CultureInfo.InvariantCulture),
            "--init-groups",
            "--",
            .. command,
        ];

    /// <summary>
    /// Before a launch: makes the QEMU folder (0700) and gives it and the overlay to QEMU's user, who may pass through
    /// every folder from the state folder down to the machine's work folder.
    /// </summary>
    public void Prepare(QemuMachinePaths paths, string overlay)
    {
        Directory.CreateDirectory(paths.QemuDirectory, Private);
        if (Account is not { } account)
        {
            return;
        }

        OpenDownTo(paths.WorkDirectory);
        UnixAccounts.ChangeOwner(paths.QemuDirectory, account.Uid, account.Gid);
        UnixAccounts.ChangeOwner(overlay, account.Uid, account.Gid);
    }

    /// <summary>
    /// At daemon start (which closes the state folder to 0700 again): QEMUs taken back keep their way to their files.
    /// </summary>
    public void OpenStateFolder(string machinesFolder)
    {
        if (Account is not null && Directory.Exists(machinesFolder))
        {
            OpenDownTo(machinesFolder);
        }
    }

    /// <summary>Group traverse (0710, QEMU's group) on every folder from the state folder down to <paramref name="target"/>.</summary>
    private void OpenDownTo(string target)
    {
        var state = Path.TrimEndingDirectorySeparator(Path.GetFullPath(StateDirectory));
        var folder = Path.GetFullPath(target);
        while (folder == state || folder.StartsWith(state + "/", StringComparison.Ordinal))
        {
            UnixAccounts.ChangeOwner(folder, -1, Account!.Gid);
            File.SetUnixFileMode(folder, Private | UnixFileMode.GroupExecute);
            folder = Path.GetDirectoryName(folder) ?? string.Empty;
        }
    }

    /// <summary>
    /// Makes a folder of image versions, or one version file, readable (not writable) by QEMU's group;
    /// <paramref name="reclaim"/> takes a file QEMU's user wrote (a saved guest's layer) back for the daemon first.
    /// </summary>
    public void ShareImage(string path, bool folder, bool reclaim = false)
    {
        if (Account is not { } account)
        {
            return;
        }

        UnixAccounts.ChangeOwner(path, reclaim ? (int)UnixAccounts.EffectiveUid : -1, account.Gid);
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead
            | (folder ? UnixFileMode.UserExecute | UnixFileMode.GroupExecute : 0));
    }
}
