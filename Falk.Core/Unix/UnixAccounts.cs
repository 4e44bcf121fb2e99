using System.Globalization;
using System.Runtime.InteropServices;

namespace Falk.Core.Unix;

/// <summary>Looks up users and groups through the system's name service (getpwnam/getgrnam).</summary>
public static class UnixAccounts
{
    // struct passwd { char *pw_name; char *pw_passwd; uid_t pw_uid; gid_t pw_gid; ... } on 64-bit Linux.
    private const int PasswdUidOffset = 16;
    private const int PasswdGidOffset = 20;

    // struct group { char *gr_name; char *gr_passwd; gid_t gr_gid; char **gr_mem; }
    private const int GroupGidOffset = 16;

    public static uint EffectiveUid => Native.geteuid();

    /// <summary>A uid from a user name or a number, or null when there is no such user.</summary>
    public static int? ResolveUser(string nameOrId)
    {
        if (int.TryParse(nameOrId, NumberStyles.None, CultureInfo.InvariantCulture, out var id))
        {
            return id;
        }

        var entry = Native.getpwnam(nameOrId);
        return entry == IntPtr.Zero ? null : Marshal.ReadInt32(entry, PasswdUidOffset);
    }

    /// <summary>The uid and primary gid of the user named <paramref name="name"/>, or null when there is no such user.</summary>
    public static (int Uid, int Gid)? ResolveAccount(string name)
    {
        var entry = Native.getpwnam(name);
        return entry == IntPtr.Zero ? null : (Marshal.ReadInt32(entry, PasswdUidOffset), Marshal.ReadInt32(entry, PasswdGidOffset));
    }

    /// <summary>Changes the owner and group of a file (-1 keeps one); throws <see cref="IOException"/> naming the path on failure.</summary>
    public static void ChangeOwner(string path, int uid, int gid)
    {
        if (Native.chown(path, uid, gid) != 0)
        {
            throw new IOException($"cannot give {path} to uid {uid}, gid {gid}: {Marshal.GetLastPInvokeErrorMessage()}");
        }
    }

    /// <summary>A gid from a group name or a number, or null when there is no such group.</summary>
    public static int? ResolveGroup(string nameOrId)
    {
        if (int.TryParse(nameOrId, NumberStyles.None, CultureInfo.InvariantCulture, out var id))
        {
            return id;
        }

        var entry = Native.getgrnam(nameOrId);
        return entry == IntPtr.Zero ? null : Marshal.ReadInt32(entry, GroupGidOffset);
    }

    /// <summary>Changes the group of a file; throws <see cref="IOException"/> naming the path on failure.</summary>
    public static void ChangeGroup(string path, int gid)
    {
        if (Native.chown(path, -1, gid) != 0)
        {
            throw new IOException($"cannot give {path} group {gid}: {Marshal.GetLastPInvokeErrorMessage()}");
        }
    }
}
