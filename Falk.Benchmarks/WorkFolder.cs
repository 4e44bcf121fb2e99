namespace Falk.Benchmarks;

/// <summary>A benchmark's temporary folder.</summary>
internal static class WorkFolder
{
    /// <summary>
    /// A new folder under the temporary folder, mode 0711: QEMU runs as its own user (<c>qemu_user</c>), which must
    /// pass through it down to the state folder falkd opens for it; nobody else may list it.
    /// </summary>
    public static string Create()
    {
        var work = Directory.CreateTempSubdirectory("falk-bench-").FullName;
        File.SetUnixFileMode(work, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
            | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute);
        return work;
    }
}
