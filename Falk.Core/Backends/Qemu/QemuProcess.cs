using Falk.Core.Processes;
using Falk.Core.Unix;

namespace Falk.Core.Backends.Qemu;

/// <summary>
/// The QEMU process of a machine: one this daemon started (its child, output drained, exit code known) or one an
/// earlier daemon started and this one took back after a restart (recognised by pid and start time, watched by polling).
/// </summary>
internal abstract class QemuProcess : IAsyncDisposable
{
    public abstract int Pid { get; }

    public abstract long? StartTime { get; }

    /// <summary>The session and process group QEMU leads (set up at launch), as recorded in the machine's handle.</summary>
    public abstract SessionMark? Launch { get; }

    /// <summary>Completes with the exit code when QEMU ends; null when it cannot be known (not our child).</summary>
    public abstract Task<int?> Exited { get; }

    public bool HasExited => Exited.IsCompleted;

    /// <summary>SIGKILL to QEMU and its process group; waits (bounded) until it is gone.</summary>
    public abstract Task KillAsync(CancellationToken cancellationToken);

    /// <summary>The last lines QEMU wrote to stdout/stderr, when this daemon reads them.</summary>
    public abstract string OutputTail(int lines);

    /// <summary>Waits, bounded, for what QEMU wrote just before it ended.</summary>
    public abstract Task WaitForOutputAsync(TimeSpan timeout);

    /// <summary>Kills what is left. Idempotent.</summary>
    public abstract ValueTask DisposeAsync();
}

/// <summary>A QEMU this daemon started.</summary>
internal sealed class LaunchedQemu(RunningProcess process) : QemuProcess
{
    public override int Pid => process.Pid;

    public override long? StartTime => process.StartTime;

    public override SessionMark? Launch => process.Session;

    public override Task<int?> Exited { get; } = ExitCodeAsync(process);

    public override Task KillAsync(CancellationToken cancellationToken) => process.KillAsync(cancellationToken);

    public override string OutputTail(int lines) => process.OutputTail(lines);

    public override async Task WaitForOutputAsync(TimeSpan timeout)
    {
        try
        {
            await process.WaitForOutputAsync(CancellationToken.None).WaitAsync(timeout).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // Report what was read.
        }
    }

    public override ValueTask DisposeAsync() => process.DisposeAsync();

    private static async Task<int?> ExitCodeAsync(RunningProcess process) => await process.Exited.ConfigureAwait(false);
}

/// <summary>
/// A QEMU an earlier daemon started, taken back after a restart. It is no longer our child: its end is noticed by
/// polling, its exit code is not known, its output went to the earlier daemon's pipes (the serial console is in a file).
/// </summary>
internal sealed class AdoptedQemu : QemuProcess
{
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(200);

    private static readonly TimeSpan KillTimeout = TimeSpan.FromSeconds(10);

    private readonly SessionMark _launch;

    public AdoptedQemu(SessionMark launch)
    {
        _launch = launch;
        Exited = WatchAsync(launch.ProcessGroup, launch.LeaderStartTime);
    }

    public override int Pid => _launch.ProcessGroup;

    public override long? StartTime => _launch.LeaderStartTime;

    public override SessionMark? Launch => _launch;

    public override Task<int?> Exited { get; }

    /// <summary>
    /// QEMU leads a session of its own (setsid at launch): the group, while its leader provably is the recorded QEMU, and
    /// every member of the group or session that started after it. A pid taken by another process is never signalled.
    /// </summary>
    public override async Task KillAsync(CancellationToken cancellationToken)
    {
        _launch.KillAll();
        await Exited.WaitAsync(KillTimeout, cancellationToken).ConfigureAwait(false);
    }

    public override string OutputTail(int lines) => string.Empty;

    public override Task WaitForOutputAsync(TimeSpan timeout) => Task.CompletedTask;

    public override async ValueTask DisposeAsync()
    {
        try
        {
            await KillAsync(CancellationToken.None).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // Unkillable (D state); nothing more can be done from here.
        }
    }

    private static async Task<int?> WatchAsync(int pid, long startTime)
    {
        await ProcessTree.WaitUntilGoneAsync(pid, startTime, PollInterval).ConfigureAwait(false);
        return null;
    }
}
