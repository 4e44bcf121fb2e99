using System.Net;
using System.Net.Sockets;
using Falk.Core.Machines;

namespace Falk.Core.Ssh;

/// <summary>
/// The address a template's <c>ssh_host</c> stands for: the literal itself, or what the name resolves to here, IPv4
/// first. Resolved once, here, so a backend publishes on and a client is handed the same address (a client may
/// resolve a name differently, an address it cannot).
/// </summary>
public static class SshHostAddress
{
    public static async Task<IPAddress> ResolveAsync(string host, CancellationToken cancellationToken)
    {
        if (IPAddress.TryParse(host, out var literal))
        {
            return literal;
        }

        try
        {
            var addresses = await Dns.GetHostAddressesAsync(host, cancellationToken).ConfigureAwait(false);
            return addresses.FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork)
                ?? addresses.FirstOrDefault()
                ?? throw new BackendOperationException($"ssh_host {host} resolves to no address");
        }
        catch (SocketException e)
        {
            throw new BackendOperationException($"ssh_host {host} cannot be resolved: {e.Message}", e);
        }
    }
}
