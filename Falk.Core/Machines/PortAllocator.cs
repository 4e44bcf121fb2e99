using System.Net;
using System.Net.Sockets;
using Falk.Core.Config;

namespace Falk.Core.Machines;

/// <summary>
/// Hands out SSH ports from <c>vm_ports</c>. A port is handed to one machine at a time and only after a
/// test bind shows no other process on the host holds it. Allocation rotates through the range so a port
/// just released is not reused at once.
/// </summary>
public sealed class PortAllocator(PortRange range, Func<int, bool>? isFreeOnHost = null)
{
    private readonly HashSet<int> _inUse = [];
    private readonly Func<int, bool> _isFreeOnHost = isFreeOnHost ?? IsFreeOnHost;
    private readonly Lock _lock = new();
    private int _next = range.First;

    public PortRange Range { get; } = range;

    public int InUseCount
    {
        get
        {
            lock (_lock)
            {
                return _inUse.Count;
            }
        }
    }

    /// <summary>A free port, now reserved, or null when every port is taken (by Falk or by other processes).</summary>
    public int? TryAllocate()
    {
        lock (_lock)
        {
            for (var i = 0; i < Range.Count; i++)
            {
                var port = _next;
                _next = port == Range.Last ? Range.First : port + 1;
                if (!_inUse.Contains(port) && _isFreeOnHost(port))
                {
                    _inUse.Add(port);
                    return port;
                }
            }

            return null;
        }
    }

    /// <summary>Reserves a given port (a template's fixed ssh_port); false when Falk or another process holds it.</summary>
    public bool TryReserve(int port)
    {
        lock (_lock)
        {
            if (_inUse.Contains(port) || !_isFreeOnHost(port))
            {
                return false;
            }

            _inUse.Add(port);
            return true;
        }
    }

    /// <summary>Marks a port as held by a machine taken back after a restart (its own process holds it on the host).</summary>
    public void Claim(int port)
    {
        lock (_lock)
        {
            _inUse.Add(port);
        }
    }

    public void Release(int port)
    {
        lock (_lock)
        {
            _inUse.Remove(port);
        }
    }

    /// <summary>Whether nothing on this host holds the TCP port on any IPv4 or IPv6 address.</summary>
    public static bool IsFreeOnHost(int port) =>
        CanBind(new IPEndPoint(IPAddress.Any, port)) && CanBind(new IPEndPoint(IPAddress.IPv6Any, port));

    private static bool CanBind(IPEndPoint endpoint)
    {
        try
        {
            using var socket = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            if (endpoint.AddressFamily == AddressFamily.InterNetworkV6)
            {
                socket.DualMode = false;
            }

            socket.Bind(endpoint);
            return true;
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.AddressFamilyNotSupported)
        {
            // No IPv6 on this host: nothing can hold the port there.
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
