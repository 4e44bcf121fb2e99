using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Falk.Core.Unix;

/// <summary>
/// The listening TCP sockets of this network namespace, asked of the kernel over netlink (<c>NETLINK_SOCK_DIAG</c>, as
/// <c>ss -lt</c> does). Reading <c>/proc/net/tcp</c> instead walks the whole established-connection hash table, however
/// few sockets there are (7 ms per file on the development machine, twice per check); a dump of the LISTEN state
/// walks only the listening table.
/// </summary>
internal static class SockDiag
{
    private const int NetlinkSockDiag = 4;
    private const ushort SockDiagByFamily = 20;
    private const ushort RequestDump = 0x1 | 0x300; // NLM_F_REQUEST | NLM_F_DUMP
    private const ushort MessageError = 2;
    private const ushort MessageDone = 3;
    private const int HeaderLength = 16;
    private const int RequestLength = 56;
    private const int DiagMessageLength = 72;
    private const uint ListenStateMask = 1u << 10; // TCPF_LISTEN
    private const int FamilyInet = 2; // AF_INET
    private const int FamilyInet6 = 10; // AF_INET6
    private const int FamilyNetlink = 16; // AF_NETLINK
    private const int DatagramCloseOnExec = 2 | 0x80000; // SOCK_DGRAM | SOCK_CLOEXEC

    /// <summary>The LISTEN sockets of <paramref name="family"/>; throws <see cref="SocketException"/> when the kernel refuses the dump.</summary>
    public static List<ListeningSocket> Listening(AddressFamily family)
    {
        var fd = Native.socket(FamilyNetlink, DatagramCloseOnExec, NetlinkSockDiag);
        if (fd < 0)
        {
            throw new SocketException(Marshal.GetLastPInvokeError());
        }

        try
        {
            Span<byte> request = stackalloc byte[HeaderLength + RequestLength];
            request.Clear();
            BitConverter.TryWriteBytes(request[0..4], (uint)request.Length);
            BitConverter.TryWriteBytes(request[4..6], SockDiagByFamily);
            BitConverter.TryWriteBytes(request[6..8], RequestDump);
            BitConverter.TryWriteBytes(request[8..12], 1u);
            request[HeaderLength] = (byte)(family == AddressFamily.InterNetworkV6 ? FamilyInet6 : FamilyInet);
            request[HeaderLength + 1] = (byte)ProtocolType.Tcp;
            BitConverter.TryWriteBytes(request[(HeaderLength + 4)..(HeaderLength + 8)], ListenStateMask);
            if (Native.send(fd, request, request.Length, 0) != request.Length)
            {
                throw new SocketException(Marshal.GetLastPInvokeError());
            }

            var sockets = new List<ListeningSocket>();
            var buffer = new byte[32 * 1024];
            while (true)
            {
                var read = (int)Native.recv(fd, buffer, buffer.Length, 0);
                if (read < 0)
                {
                    throw new SocketException(Marshal.GetLastPInvokeError());
                }

                for (var offset = 0; offset + HeaderLength <= read;)
                {
                    var message = buffer.AsSpan(offset, read - offset);
                    var length = (int)BitConverter.ToUInt32(message[0..4]);
                    var type = BitConverter.ToUInt16(message[4..6]);
                    if (length < HeaderLength || length > message.Length)
                    {
                        throw new SocketException((int)SocketError.ProtocolNotSupported);
                    }

                    if (type == MessageDone)
                    {
                        return sockets;
                    }

                    if (type == MessageError)
                    {
                        throw new SocketException(-BitConverter.ToInt32(message[HeaderLength..(HeaderLength + 4)]));
                    }

                    if (type == SockDiagByFamily && length >= HeaderLength + DiagMessageLength)
                    {
                        sockets.Add(Parse(message.Slice(HeaderLength, DiagMessageLength)));
                    }

                    offset += (length + 3) & ~3;
                }
            }
        }
        finally
        {
            _ = Native.close(fd);
        }
    }

    // struct inet_diag_msg: family, state, timer, retrans; inet_diag_sockid (sport, dport big-endian; src, dst 16 bytes
    // each; interface; cookie); expires, rqueue, wqueue, uid, inode.
    private static ListeningSocket Parse(ReadOnlySpan<byte> message)
    {
        var port = BinaryPrimitives.ReadUInt16BigEndian(message[4..6]);
        var address = message[0] == FamilyInet6 ? new IPAddress(message[8..24]) : new IPAddress(message[8..12]);
        var uid = (int)BitConverter.ToUInt32(message[64..68]);
        var inode = BitConverter.ToUInt32(message[68..72]);
        return new ListeningSocket(address, port, uid, inode);
    }
}
