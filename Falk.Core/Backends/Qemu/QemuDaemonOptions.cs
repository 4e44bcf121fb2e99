using Falk.Core.Config;
using Falk.Core.Unix;

namespace Falk.Core.Backends.Qemu;

/// <summary>
/// The QEMU backend's key of <c>[falk]</c>: <c>qemu_user</c>, the user QEMU runs as (default <c>falk-qemu</c>, a
/// system user <c>scripts/install-deps.sh</c> creates). A guest that escapes into QEMU is that user, not root.
/// A falkd that is not root cannot switch users: its QEMUs run as its own user (<see cref="Account"/> is null).
/// </summary>
/// <param name="UserName">The configured user.</param>
/// <param name="Account">The user QEMU is switched to; null when it runs as the daemon's own user.</param>
public sealed record QemuDaemonOptions(string UserName, QemuAccount? Account, string? ProblemWhenUsed = null) : ICheckedWhenUsed
{
    public const string UserKey = "qemu_user";

    public const string DefaultUser = "falk-qemu";

    /// <summary>For a config without the QEMU backend's keys (one built in code): QEMU runs as the daemon's user.</summary>
    public static QemuDaemonOptions OwnUser { get; } = new(DefaultUser, null);

    internal static object Parse(SectionReader reader)
    {
        var name = reader.Text(UserKey) ?? DefaultUser;
        if (UnixAccounts.EffectiveUid != 0)
        {
            return new QemuDaemonOptions(name, null);
        }

        if (UnixAccounts.ResolveAccount(name) is not var (uid, gid))
        {
            return new QemuDaemonOptions(name, null,
                $"{UserKey}: no user '{name}' on this host; QEMU must not run as root (scripts/install-deps.sh creates {DefaultUser}, or name another user)");
        }

        // qemu_user = root is the administrator's explicit choice: no switch.
        return new QemuDaemonOptions(name, uid == 0 ? null : new QemuAccount(name, uid, gid));
    }
}

/// <summary>The unprivileged user QEMU runs as: its uid and primary group.</summary>
public sealed record QemuAccount(string Name, int Uid, int Gid);
