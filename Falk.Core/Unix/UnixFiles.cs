using System.Buffers.Binary;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Falk.Core.Unix;

/// <summary>What a path names, without following a symbolic link at its end.</summary>
public enum NodeKind
{
    Missing,
    Regular,
    Directory,
    SymbolicLink,
    Socket,
    Fifo,
    Other,
}

/// <summary>A path's type, owner, permission bits and group.</summary>
public readonly record struct NodeStatus(NodeKind Kind, int Uid, UnixFileMode Mode, int Gid = -1);

/// <summary>File-system calls that must not follow a swapped path: lstat, private binding of a socket, the umask.</summary>
public static partial class UnixFiles
{
    private const int AtFdCwd = -100;
    private const int AtSymlinkNoFollow = 0x100;
    private const int StatxBasicStats = 0x7ff;
    private const int OpenDirectoryNoFollow = 0x10000 | 0x20000 | 0x80000; // O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
    private const int RenameNoReplace = 1;
    private const int AtRemoveDir = 0x200;
    private const int ENOENT = 2;

    /// <summary>
    /// Files falkd and its children create are the daemon user's alone (umask 077): falk.db, overlays, console logs
    /// and keys come out 0600 and folders 0700, with no window in which another user could open them.
    /// </summary>
    public static void RestrictNewFiles() => _ = umask(Convert.ToInt32("077", 8));

    /// <summary>The status of <paramref name="path"/> itself (lstat); a symbolic link is reported, not followed.</summary>
    public static NodeStatus Lstat(string path) => Status(path, followLink: false);

    /// <summary>The status of what <paramref name="path"/> names, following symbolic links (stat).</summary>
    public static NodeStatus Stat(string path) => Status(path, followLink: true);

    /// <summary>
    /// Binds a Unix socket at <paramref name="path"/> with the given mode and group, never touching anything a
    /// swapped path points to: the socket is bound, chmod-ed and chown-ed inside a fresh 0700 folder next to
    /// <paramref name="path"/> that only the daemon can change, then renamed into place without replacing
    /// anything that appeared there meanwhile.
    /// </summary>
    public static Socket BindSocket(string path, UnixFileMode mode, int? groupId)
    {
        var full = Path.GetFullPath(path);
        var parent = Path.GetDirectoryName(full) ?? "/";
        var name = Path.GetFileName(full);
        var parentFd = OpenDirectory(parent);
        try
        {
            var template = System.Text.Encoding.UTF8.GetBytes(Path.Combine(parent, ".falk-bind-XXXXXX") + "\0");
            if (mkdtemp(template) == IntPtr.Zero)
            {
                throw Failure("cannot make a private folder next to", full);
            }

            var staging = System.Text.Encoding.UTF8.GetString(template, 0, template.Length - 1);
            var stagingName = Path.GetFileName(staging);
            var stagingFd = OpenDirectory(staging);
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                socket.Bind(new UnixDomainSocketEndPoint($"/proc/self/fd/{stagingFd}/{name}"));
                if (fchmodat(stagingFd, name, (int)mode, 0) != 0)
                {
                    throw Failure("cannot set the mode of", full);
                }

                if (groupId is { } gid && fchownat(stagingFd, name, -1, gid, AtSymlinkNoFollow) != 0)
                {
                    throw Failure("cannot set the group of", full);
                }

                if (renameat2(stagingFd, name, parentFd, name, RenameNoReplace) != 0)
                {
                    throw Failure("cannot move the socket into place at", full);
                }

                return socket;
            }
            catch
            {
                socket.Dispose();
                _ = unlinkat(stagingFd, name, 0);
                throw;
            }
            finally
            {
                _ = close(stagingFd);
                _ = unlinkat(parentFd, stagingName, AtRemoveDir);
            }
        }
        finally
        {
            _ = close(parentFd);
        }
    }

    private static int OpenDirectory(string path)
    {
        var fd = open(path, OpenDirectoryNoFollow);
        return fd >= 0 ? fd : throw Failure("cannot open the folder", path);
    }

    private static IOException Failure(string what, string path) =>
        new($"{what} {path}: {Marshal.GetLastPInvokeErrorMessage()}");

    private static NodeStatus Status(string path, bool followLink)
    {
        // struct statx is the same on every architecture: stx_uid at 20, stx_gid at 24, stx_mode at 28.
        Span<byte> buffer = stackalloc byte[256];
        if (statx(AtFdCwd, path, followLink ? 0 : AtSymlinkNoFollow, StatxBasicStats, ref MemoryMarshal.GetReference(buffer)) != 0)
        {
            return Marshal.GetLastPInvokeError() == ENOENT
                ? new NodeStatus(NodeKind.Missing, -1, 0)
                : throw Failure("cannot read the status of", path);
        }

        var uid = BinaryPrimitives.ReadInt32LittleEndian(buffer[20..]);
        var mode = BinaryPrimitives.ReadUInt16LittleEndian(buffer[28..]);
        var kind = (mode & 0xF000) switch
        {
            0x8000 => NodeKind.Regular,
            0x4000 => NodeKind.Directory,
            0xA000 => NodeKind.SymbolicLink,
            0xC000 => NodeKind.Socket,
            0x1000 => NodeKind.Fifo,
            _ => NodeKind.Other,
        };
        return new NodeStatus(kind, uid, (UnixFileMode)(mode & 0xFFF), BinaryPrimitives.ReadInt32LittleEndian(buffer[24..]));
    }

    [LibraryImport("libc")]
    private static partial int umask(int mask);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int statx(int dirFd, string path, int flags, int mask, ref byte buffer);

    [LibraryImport("libc", SetLastError = true)]
    private static partial IntPtr mkdtemp([In, Out] byte[] template);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int open(string path, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int close(int fd);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int fchmodat(int dirFd, string name, int mode, int flags);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int fchownat(int dirFd, string name, int owner, int group, int flags);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int renameat2(int oldDirFd, string oldName, int newDirFd, string newName, int flags);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int unlinkat(int dirFd, string name, int flags);
}
