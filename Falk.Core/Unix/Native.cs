using System.Runtime.InteropServices;

namespace Falk.Core.Unix;

/// <summary>The few libc calls .NET has no managed API for.</summary>
internal static partial class Native
{
    public const int SIGINT = 2;
    public const int SIGKILL = 9;
    public const int SIGTERM = 15;
    public const int ESRCH = 3;

    [LibraryImport("libc", SetLastError = true)]
    public static partial int kill(int pid, int signal);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int chown(string path, int owner, int group);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial IntPtr getgrnam(string name);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial IntPtr getpwnam(string name);

    [LibraryImport("libc")]
    public static partial uint geteuid();
}
