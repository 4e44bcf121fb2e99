using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Falk.Core.Backends.Qemu.Qmp;

/// <summary>
/// Sends bytes on a Unix socket together with one open file descriptor (<c>sendmsg</c> with <c>SCM_RIGHTS</c>): how QMP's
/// <c>getfd</c> receives a file QEMU cannot or may not open itself (its seccomp sandbox denies spawning, so no <c>exec:</c>).
/// </summary>
internal static unsafe partial class DescriptorPassing
{
    private const int SolSocket = 1;
    private const int ScmRights = 1;
    private const int MsgNoSignal = 0x4000;
    private const int TryAgain = 11; // EAGAIN
    private const int Interrupted = 4; // EINTR

    public static void Send(Socket socket, byte[] bytes, SafeHandle descriptor)
    {
        var socketAdded = false;
        var descriptorAdded = false;
        try
        {
            socket.SafeHandle.DangerousAddRef(ref socketAdded);
            descriptor.DangerousAddRef(ref descriptorAdded);
            var socketFd = (int)socket.SafeHandle.DangerousGetHandle();

            // One cmsghdr (length, level, type) and one int, padded to 8 bytes: CMSG_SPACE(sizeof(int)) on 64-bit Linux.
            var control = stackalloc ulong[3];
            var header = (ControlHeader*)control;
            header->Length = (nuint)(sizeof(ControlHeader) + sizeof(int));
            header->Level = SolSocket;
            header->Type = ScmRights;
            *(int*)(header + 1) = (int)descriptor.DangerousGetHandle();

            fixed (byte* data = bytes)
            {
                var vector = new IoVector { Base = data, Length = (nuint)bytes.Length };
                var message = new MessageHeader { Vectors = &vector, VectorCount = 1, Control = control, ControlLength = (nuint)(3 * sizeof(ulong)) };
                nint sent;
                do
                {
                    sent = sendmsg(socketFd, &message, MsgNoSignal);
                }
                while (sent < 0 && Marshal.GetLastPInvokeError() == Interrupted);

                if (sent < 0)
                {
                    var errno = Marshal.GetLastPInvokeError();
                    throw new IOException(errno == TryAgain
                        ? "the QMP socket's send buffer is full"
                        : $"sendmsg with a file descriptor failed (errno {errno})");
                }

                // The descriptor went with the first byte; the rest of a short send follows as plain data.
                if (sent < bytes.Length)
                {
                    socket.Send(bytes.AsSpan((int)sent));
                }
            }
        }
        finally
        {
            if (descriptorAdded)
            {
                descriptor.DangerousRelease();
            }

            if (socketAdded)
            {
                socket.SafeHandle.DangerousRelease();
            }
        }
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint sendmsg(int socket, MessageHeader* message, int flags);

    [StructLayout(LayoutKind.Sequential)]
    private struct IoVector
    {
        public byte* Base;
        public nuint Length;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct MessageHeader
    {
        public void* Name;
        public uint NameLength;
        public IoVector* Vectors;
        public nuint VectorCount;
        public void* Control;
        public nuint ControlLength;
        public int Flags;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct ControlHeader
    {
        public nuint Length;
        public int Level;
        public int Type;
    }
}
