using Falk.Core.Unix;

namespace Falk.Core.Ssh;

/// <summary>A process that is not the machine's listens where the machine's SSH server should. The machine fails.</summary>
public sealed class SshEndpointTakenException(string machineId, ListeningSocket socket, IReadOnlyList<int> intruders)
    : FalkException("ssh-endpoint-taken", Describe(machineId, socket, intruders))
{
    public IReadOnlyList<int> IntruderPids { get; } = intruders;

    public override string Title => "SSH endpoint taken";

    public override IReadOnlyDictionary<string, object?> Details => new Dictionary<string, object?>
    {
        ["machine_id"] = machineId,
        ["endpoint"] = socket.ToString(),
        ["intruder_uid"] = socket.Uid,
        ["intruder_pids"] = IntruderPids,
    };

    private static string Describe(string machineId, ListeningSocket socket, IReadOnlyList<int> intruders)
    {
        var who = intruders.Count == 0
            ? "a process not visible to falkd"
            : string.Join(", ", intruders.Select(p => $"pid {p} ({string.Join(' ', ProcessTree.Arguments(p).Take(3)).Trim()})"));
        return $"machine {machineId}: {socket} is served by {who}, socket owned by uid {socket.Uid}, not by the machine: " +
            "another program took its SSH port; its answers are not trusted";
    }
}
