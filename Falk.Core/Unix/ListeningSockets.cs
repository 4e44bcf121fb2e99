using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Falk.Core.Unix;

/// <summary>A TCP socket in the LISTEN state, as <c>/proc/net/tcp{,6}</c> lists it.</summary>
public readonly record struct ListeningSocket(IPAddress Address, int Port, int Uid, long Inode)
{
    public override string ToString() => $"{(Address.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{Address}]" : Address)}:{Port}";
}

/// <summary>Which sockets listen on a TCP port of this host (its network namespace), and which processes hold them.</summary>
public static class ListeningSockets
{
    private const string ListenState = "0A";

    /// <summary>
    /// The sockets a connection to <paramref name="address"/>:<paramref name="port"/> may reach: bound to that address,
    /// or to the wildcard of its family, or (for an IPv4 address) to <c>[::]</c>, which also takes IPv4 unless it is
    /// IPv6-only (which /proc does not tell: counted, to be safe).
    /// </summary>
    public static IReadOnlyList<ListeningSocket> Reaching(IPAddress address, int port) =>
        All().Where(s => s.Port == port && (s.Address.Equals(address)
            || s.Address.Equals(address.AddressFamily == AddressFamily.InterNetwork ? IPAddress.Any : IPAddress.IPv6Any)
            || (address.AddressFamily == AddressFamily.InterNetwork && s.Address.Equals(IPAddress.IPv6Any))
            || (address.AddressFamily == AddressFamily.InterNetwork && s.Address.IsIPv4MappedToIPv6 && s.Address.MapToIPv4().Equals(address))))
        .ToList();

    /// <summary>Every listening TCP socket, IPv4 and IPv6.</summary>
    public static IReadOnlyList<ListeningSocket> All()
    {
        try
        {
            return [.. SockDiag.Listening(AddressFamily.InterNetwork), .. SockDiag.Listening(AddressFamily.InterNetworkV6)];
        }
        catch (SocketException)
        {
            // A kernel without TCP socket diagnostics (tcp_diag not built or loaded): the slower tables.
            return FromProcTables();
        }
    }

    /// <summary>Every listening TCP socket as <c>/proc/net/tcp{,6}</c> list them.</summary>
    internal static IReadOnlyList<ListeningSocket> FromProcTables() => [.. Read("/proc/net/tcp"), .. Read("/proc/net/tcp6")];

    /// <summary>The live processes, this one included, that hold socket <paramref name="inode"/> open (a scan of every process's descriptors).</summary>
    public static IReadOnlyList<int> Holders(long inode) =>
        ProcessTree.All().Select(p => p.Pid).Prepend(Environment.ProcessId).Where(pid => Holds(pid, inode)).ToList();

    /// <summary>Whether process <paramref name="pid"/> holds socket <paramref name="inode"/> open (false once it is gone).</summary>
    public static bool Holds(int pid, long inode)
    {
        var link = $"socket:[{inode.ToString(CultureInfo.InvariantCulture)}]";
        try
        {
            foreach (var fd in Directory.EnumerateFileSystemEntries($"/proc/{pid}/fd"))
            {
                if (new FileInfo(fd).LinkTarget == link)
                {
                    return true;
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Gone meanwhile, or a descriptor closed while it was read.
        }

        return false;
    }

    private static IEnumerable<ListeningSocket> Read(string table)
    {
        string[] lines;
        try
        {
            lines = File.ReadAllLines(table);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // No IPv6 on this host: nothing listens there.
            yield break;
        }

        foreach (var line in lines.Skip(1))
        {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode …
            var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length < 10 || fields[3] != ListenState)
            {
                continue;
            }

            var local = fields[1].Split(':');
            if (local.Length != 2
                || !int.TryParse(local[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var port)
                || !int.TryParse(fields[7], CultureInfo.InvariantCulture, out var uid)
                || !long.TryParse(fields[9], CultureInfo.InvariantCulture, out var inode)
                || ParseAddress(local[0]) is not { } address)
            {
                continue;
            }

            yield return new ListeningSocket(address, port, uid, inode);
        }
    }

    /// <summary>The kernel prints an address as 32-bit words in host (little-endian) byte order, in hex.</summary>
    private static IPAddress? ParseAddress(string hex)
    {
        if (hex.Length is not (8 or 32))
        {
            return null;
        }

        var bytes = new byte[hex.Length / 2];
        for (var word = 0; word < bytes.Length / 4; word++)
        {
            for (var i = 0; i < 4; i++)
            {
                if (!byte.TryParse(hex.AsSpan((word * 8) + ((3 - i) * 2), 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out bytes[(word * 4) + i]))
                {
                    return null;
                }
            }
        }

        return new IPAddress(bytes);
    }
}
