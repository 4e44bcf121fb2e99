using System.Runtime.InteropServices;

namespace Falk.Core.Backends.Qemu;

/// <summary>fsync for files and folders, so a rename that publishes a file is durable only after its contents are.</summary>
internal static partial class FileSync
{
    private const int ReadOnly = 0;
    private const int Directory = 0x10000; // O_DIRECTORY on Linux

    /// <summary>Flushes a file's data and metadata to the disk.</summary>
    public static void File(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
        stream.Flush(flushToDisk: true);
    }

    /// <summary>Flushes a folder's entries (a rename or a new file in it) to the disk.</summary>
    public static void Folder(string path)
    {
        var fd = open(path, ReadOnly | Directory);
        if (fd < 0)
        {
            throw new IOException($"cannot open folder {path} to sync it (errno {Marshal.GetLastPInvokeError()})");
        }

        try
        {
            if (fsync(fd) != 0)
            {
                throw new IOException($"cannot sync folder {path} (errno {Marshal.GetLastPInvokeError()})");
            }
        }
        finally
        {
            _ = close(fd);
        }
    }

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int open(string path, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fsync(int fd);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int close(int fd);
}
