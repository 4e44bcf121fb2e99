using System.Net;
using Falk.Core.Unix;

namespace Falk.Core.Ssh;

/// <summary>
/// Checks that whatever listens on a machine's SSH address and port is the machine's own process, for backends that
/// can tell (<see cref="Machines.IProcessOwnership"/>). Someone else's server there (a local user who took the port
/// between create and boot) fails the machine at once and is named, instead of being trusted as its SSH server.
/// A socket's verdict is kept: the same socket stays with the same processes. A socket one of the machine's own
/// <paramref name="candidates"/> holds is the machine's without a scan of every process's descriptors (20 ms on a busy
/// host): a socket is only ever held by the process that opened it and those it handed it to.
/// </summary>
public sealed class SshListenerGuard(string machineId, IPAddress address, int port, Func<int, bool> ownsProcess, Func<IEnumerable<int>>? candidates = null)
{
    private readonly HashSet<long> _ownSockets = [];

    public void ThrowIfTaken()
    {
        foreach (var socket in ListeningSockets.Reaching(address, port))
        {
            if (_ownSockets.Contains(socket.Inode))
            {
                continue;
            }

            if (candidates?.Invoke().Any(pid => ListeningSockets.Holds(pid, socket.Inode) && ownsProcess(pid)) == true)
            {
                _ownSockets.Add(socket.Inode);
                continue;
            }

            var holders = ListeningSockets.Holders(socket.Inode);
            if (holders.Count > 0 && holders.All(ownsProcess))
            {
                _ownSockets.Add(socket.Inode);
                continue;
            }

            if (holders.Count == 0 && !ListeningSockets.Reaching(address, port).Contains(socket))
            {
                // Closed while it was looked for.
                continue;
            }

            throw new SshEndpointTakenException(machineId, socket, holders.Where(p => !ownsProcess(p)).ToList());
        }
    }
}
