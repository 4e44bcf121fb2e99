using Falk.Core.Unix;

namespace Falk.Core.Processes;

/// <summary>
/// A process Falk started as the leader of a session and process group of its own (<c>setsid</c>), remembered so that
/// everything it started can be found again, by this daemon or by a later one: the group and session ids, the
/// leader's start time and the boot of the host they belong to.
/// </summary>
/// <remarks>
/// A group or session id is the leader's pid, and Linux does not hand that number to a new process while the group or
/// session has a member left. So: while a process holds the leader's pid with the leader's start time, the group is
/// provably the one Falk made and may be signalled as a whole. Once the leader is gone, a process counts as a member
/// when it is in the group or the session and started no earlier than the leader did, in the same boot; and when
/// another process holds the leader's pid, the number was reused, so the group and session are gone and nothing counts.
/// A server that double-forks keeps the session even when it leaves the group; only one that calls <c>setsid</c> itself
/// leaves both, and is then found by the machine's environment marks (<see cref="ProcessMarks"/>).
/// </remarks>
public sealed record SessionMark(int ProcessGroup, int Session, long LeaderStartTime, string BootId)
{
    /// <summary>
    /// The mark a machine's record holds (its handle's fields), or null when there is none. A record written before marks
    /// had a boot id still led its own session then, but only in this boot can its start time mean anything, which only a
    /// live leader shows.
    /// </summary>
    public static SessionMark? Recorded(int? pid, long? startTime, int? processGroup, int? session, string? bootId) =>
        (pid, startTime, processGroup, session, bootId) is (not null, { } start, { } group, { } sid, { } boot)
            ? new SessionMark(group, sid, start, boot)
            : (pid, startTime) is ({ } legacyPid, { } legacyStart) && ProcessTree.IsSameLiveProcess(legacyPid, legacyStart)
                ? new SessionMark(legacyPid, legacyPid, legacyStart, ProcessTree.BootId)
                : null;

    /// <summary>True while the group's leader is the very process recorded (a zombie included: it still holds the ids).</summary>
    public bool LeaderHoldsIds => BootId == ProcessTree.BootId && ProcessTree.IsSameProcess(ProcessGroup, LeaderStartTime);

    /// <summary>The live processes of <paramref name="processes"/> that belong to the group or session (the leader included).</summary>
    public IReadOnlyList<ProcessInfo> Members(IReadOnlyList<ProcessInfo> processes)
    {
        if (BootId != ProcessTree.BootId || ProcessTree.Read(Environment.ProcessId) is not { } self
            || ProcessGroup == self.ProcessGroup || Session == self.Session)
        {
            // Another boot's ids name nothing of ours; and the daemon's own group or session is never a machine's.
            return [];
        }

        if (processes.Any(p => (p.Pid == ProcessGroup || p.Pid == Session) && p.StartTime != LeaderStartTime))
        {
            return [];
        }

        return processes
            .Where(p => !p.IsZombie && (p.ProcessGroup == ProcessGroup || p.Session == Session) && p.StartTime >= LeaderStartTime)
            .ToList();
    }

    /// <summary>Signals the whole group at once, only while its leader provably is the recorded process.</summary>
    public void SignalGroup(int signal)
    {
        if (LeaderHoldsIds)
        {
            _ = Native.kill(-ProcessGroup, signal);
        }
    }

    /// <summary>SIGKILL to the group (while provably ours) and to every member, one by one, found in the process table.</summary>
    public void KillAll()
    {
        SignalGroup(Native.SIGKILL);
        foreach (var member in Members(ProcessTree.All()))
        {
            ProcessTree.Kill(member);
        }
    }
}
