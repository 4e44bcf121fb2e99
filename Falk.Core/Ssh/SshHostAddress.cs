using System.Net;
using System.Net.Sockets;

namespace Falk.Core.Ssh;

/// <summary>
/// The one address a template's <c>ssh_host</c> stands for, worked out once when the config is loaded: a literal is
/// itself; <c>localhost</c> is 127.0.0.1 (never a lookup, and never <c>::1</c>, which clients often try first); any other
/// name is looked up here, its first IPv4 address preferred. Falk publishes on, probes and hands out only that address,
/// so a client cannot resolve the name differently and reach a server on another address and the same port.
/// </summary>
public static class SshHostAddress
{
    public static IPAddress? TryResolve(string host, out string? problem)
    {
        problem = null;
        if (IPAddress.TryParse(host, out var literal))
        {
            return literal.IsIPv4MappedToIPv6 ? literal.MapToIPv4() : literal;
        }

        if (string.Equals(host.TrimEnd('.'), "localhost", StringComparison.OrdinalIgnoreCase))
        {
            return IPAddress.Loopback;
        }

        try
        {
            var addresses = Dns.GetHostAddresses(host);
            var address = addresses.FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork) ?? addresses.FirstOrDefault();
            problem = address is null ? $"'{host}' resolves to no address" : null;
            return address;
        }
        catch (Exception e) when (e is SocketException or ArgumentException)
        {
            problem = $"'{host}' cannot be resolved: {e.Message}";
            return null;
        }
    }
}
