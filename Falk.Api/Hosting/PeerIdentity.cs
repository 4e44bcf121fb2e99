using System.Buffers.Binary;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;

namespace Falk.Api.Hosting;

/// <summary>
/// Who is on the other end of a control-socket connection: the uid, primary group and supplementary groups the
/// kernel recorded when the peer called connect() (SO_PEERCRED, SO_PEERGROUPS). Read once when the connection is
/// accepted and kept with it, so a peer that hands its connection on or exits, and whoever gets its pid next,
/// never change what it may do. The pid is only for the log.
/// </summary>
internal sealed record PeerIdentity(int Pid, int Uid, int Gid, IReadOnlyList<int> Groups)
{
    private const int SolSocket = 1;
    private const int SoPeerCred = 17;
    private const int SoPeerGroups = 59;
    private const int MaxGroups = 65536; // NGROUPS_MAX

    /// <summary>The peer of <paramref name="socket"/>, or null when the kernel does not say.</summary>
    public static PeerIdentity? Read(Socket socket)
    {
        try
        {
            Span<byte> ucred = stackalloc byte[12];
            if (socket.GetRawSocketOption(SolSocket, SoPeerCred, ucred) != 12)
            {
                return null;
            }

            var groups = ReadGroups(socket, 64) ?? ReadGroups(socket, MaxGroups);
            return groups is null
                ? null
                : new PeerIdentity(
                    BinaryPrimitives.ReadInt32LittleEndian(ucred),
                    BinaryPrimitives.ReadInt32LittleEndian(ucred[4..]),
                    BinaryPrimitives.ReadInt32LittleEndian(ucred[8..]),
                    groups);
        }
        catch (SocketException)
        {
            return null;
        }
    }

    /// <summary>The identity a connection was accepted with (set by <see cref="PeerIdentityConnections.UsePeerIdentity"/>).</summary>
    public static PeerIdentity? Of(IFeatureCollection features) => features.Get<PeerIdentity>();

    // SO_PEERGROUPS fails with ERANGE when the buffer is too small: null, so the caller asks again with room for all.
    private static int[]? ReadGroups(Socket socket, int room)
    {
        var buffer = new byte[room * sizeof(int)];
        int length;
        try
        {
            length = socket.GetRawSocketOption(SolSocket, SoPeerGroups, buffer);
        }
        catch (SocketException) when (room < MaxGroups)
        {
            return null;
        }

        var groups = new int[length / sizeof(int)];
        for (var i = 0; i < groups.Length; i++)
        {
            groups[i] = BinaryPrimitives.ReadInt32LittleEndian(buffer.AsSpan(i * sizeof(int)));
        }

        return groups;
    }
}

/// <summary>Reads every accepted connection's <see cref="PeerIdentity"/> before any protocol runs on it.</summary>
internal static class PeerIdentityConnections
{
    /// <summary>
    /// First in the listener's connection pipeline: HTTP requests (<c>HttpContext.Features</c>) and any other
    /// connection handler on the socket find the identity in the connection's features.
    /// </summary>
    public static IConnectionBuilder UsePeerIdentity(this IConnectionBuilder listen) => listen.Use(next => connection =>
    {
        if (connection.Features.Get<IConnectionSocketFeature>()?.Socket is { } socket && PeerIdentity.Read(socket) is { } peer)
        {
            connection.Features.Set(peer);
        }

        return next(connection);
    });
}
