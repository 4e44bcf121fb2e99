using System.Diagnostics;
using System.Text;
using Falk.Core.Unix;

namespace Falk.Core.Processes;

/// <summary>
/// A started process whose stdout and stderr are drained concurrently into tails. Stopping is
/// graceful (SIGTERM to the whole tree) then forceful (SIGKILL) after a bounded wait.
/// Disposal kills what is left; it is idempotent.
/// </summary>
public sealed class RunningProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly TaskCompletionSource<int> _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Task _drain;
    private readonly HashSet<(int Pid, long? StartTime)> _seenDescendants = [];
    private readonly Lock _lock = new();

    private RunningProcess(Process process, ProcessSpec spec, long startedNotBefore)
    {
        _process = process;
        Spec = spec;
        Pid = process.Id;
        StartTime = ProcessTree.StartTime(Pid);
        Session = spec.OwnProcessGroup ? new SessionMark(Pid, Pid, StartTime ?? startedNotBefore, ProcessTree.BootId) : null;
        _process.Exited += (_, _) => _exited.TrySetResult(SafeExitCode());
        if (_process.HasExited)
        {
            _exited.TrySetResult(SafeExitCode());
        }

        _drain = Task.WhenAll(
            DrainAsync(process.StandardOutput, Stdout, spec),
            DrainAsync(process.StandardError, Stderr, spec));
    }

    /// <summary>The longest line relayed whole: a process printing without newlines never grows the daemon's memory.</summary>
    public const int MaxLineChars = 32 * 1024;

    public ProcessSpec Spec { get; }

    public int Pid { get; }

    /// <summary>Start time in clock ticks since boot, to recognise this process after a pid is reused.</summary>
    public long? StartTime { get; }

    /// <summary>The session and process group it leads, when started with <see cref="ProcessSpec.OwnProcessGroup"/>.</summary>
    public SessionMark? Session { get; }

    /// <summary>Completes with the exit code (128+signal for a signal) when the process ends.</summary>
    public Task<int> Exited => _exited.Task;

    public bool HasExited => _exited.Task.IsCompleted;

    public OutputTail Stdout { get; } = new();

    public OutputTail Stderr { get; } = new();

    /// <summary>The last lines of both streams, for error messages.</summary>
    public string OutputTail(int lines = 20)
    {
        var stderr = Stderr.Tail(lines);
        var stdout = Stdout.Tail(lines);
        return string.IsNullOrEmpty(stdout) ? stderr : string.IsNullOrEmpty(stderr) ? stdout : stdout + "\n" + stderr;
    }

    public static RunningProcess Start(ProcessSpec spec)
    {
        if (spec.Command.Count == 0)
        {
            throw new ArgumentException("empty command", nameof(spec));
        }

        var command = spec.OwnProcessGroup ? ["setsid", .. spec.Command] : spec.Command;
        var info = new ProcessStartInfo(command[0])
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = spec.WorkingDirectory ?? string.Empty,
        };
        foreach (var arg in command.Skip(1))
        {
            info.ArgumentList.Add(arg);
        }

        foreach (var (name, value) in spec.Environment)
        {
            if (value is null)
            {
                info.Environment.Remove(name);
            }
            else
            {
                info.Environment[name] = value;
            }
        }

        var process = new Process { StartInfo = info, EnableRaisingEvents = true };

        // A process may be gone (and reaped) before its start time can be read; its session is still marked, with a
        // time no later than its start: then nothing holds its pid, and any later holder is not it.
        var startedNotBefore = ProcessTree.TicksSinceBoot() - ProcessTree.ClockTicksPerSecond;
        try
        {
            process.Start();
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            process.Dispose();
            throw new ProcessFailedException(spec.Command, $"could not start: {e.Message}", null, string.Empty, e);
        }

        // Nothing is ever written to a machine's stdin; closing it keeps the daemon's stdin out of reach.
        process.StandardInput.Close();
        return new RunningProcess(process, spec, startedNotBefore);
    }

    /// <summary>Waits for the exit code; cancelling the wait does not stop the process.</summary>
    public Task<int> WaitForExitAsync(CancellationToken cancellationToken) => _exited.Task.WaitAsync(cancellationToken);

    /// <summary>Waits for both output streams to be drained (they may stay open while grandchildren live).</summary>
    public Task WaitForOutputAsync(CancellationToken cancellationToken) => _drain.WaitAsync(cancellationToken);

    /// <summary>
    /// SIGTERM to the process (and its group, when it leads one), up to <paramref name="grace"/> for it to exit,
    /// then SIGKILL to it and every descendant seen. The graceful signal leaves other descendants to the process
    /// itself, so a daemon gets to clean up after its children.
    /// </summary>
    public async Task StopAsync(TimeSpan grace, CancellationToken cancellationToken)
    {
        if (!HasExited && grace > TimeSpan.Zero)
        {
            Signal(Native.SIGTERM, includeDescendants: false);
            try
            {
                await _exited.Task.WaitAsync(grace, cancellationToken).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                // Graceful stop took too long: fall through to the kill.
            }
        }

        await KillAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>SIGKILL to the process, its group and every descendant seen; waits for the process to be reaped.</summary>
    public async Task KillAsync(CancellationToken cancellationToken)
    {
        Signal(Native.SIGKILL, includeDescendants: true);
        await _exited.Task.WaitAsync(TimeSpan.FromSeconds(10), cancellationToken).ConfigureAwait(false);
    }

    private void Signal(int signal, bool includeDescendants)
    {
        lock (_lock)
        {
            // Our child holds its pid until it is reaped; the start time covers the moment between reaping and Exited.
            if (!HasExited && (StartTime is not { } start || ProcessTree.IsSameProcess(Pid, start)))
            {
                // Remember the tree while it still hangs together: once the parent is gone, orphans cannot be traced.
                foreach (var child in ProcessTree.Descendants(Pid))
                {
                    _seenDescendants.Add((child, ProcessTree.StartTime(child)));
                }

                _ = Native.kill(Pid, signal);
            }

            if (!includeDescendants)
            {
                Session?.SignalGroup(signal);
                return;
            }

            // The group as a whole while its leader provably holds its id; then every member found, one by one,
            // also those left once the leader is gone.
            Session?.KillAll();

            // Children that left the group (a new session per SSH login) are signalled one by one,
            // but only while they are still the very process seen before (same start time).
            foreach (var (child, startTime) in _seenDescendants)
            {
                if (startTime is not null && ProcessTree.StartTime(child) == startTime)
                {
                    _ = Native.kill(child, signal);
                }
            }
        }
    }

    private int SafeExitCode()
    {
        try
        {
            return _process.ExitCode;
        }
        catch (InvalidOperationException)
        {
            return -1;
        }
    }

    /// <summary>
    /// Reads the stream in chunks and hands on its lines (without their '\n' or a trailing '\r'), a line longer than
    /// <see cref="MaxLineChars"/> in pieces, so that what is held at once stays bounded whatever the process prints.
    /// </summary>
    private static async Task DrainAsync(StreamReader reader, OutputTail tail, ProcessSpec spec)
    {
        var buffer = new char[16 * 1024];
        var line = new StringBuilder();
        void Emit()
        {
            if (line.Length > 0 && line[^1] == '\r')
            {
                line.Length--;
            }

            var text = line.ToString();
            line.Clear();
            tail.AppendLine(text);
            spec.OnOutputLine?.Invoke(text);
        }

        try
        {
            int read;
            while ((read = await reader.ReadAsync(buffer.AsMemory()).ConfigureAwait(false)) > 0)
            {
                var rest = buffer.AsSpan(0, read);
                while (!rest.IsEmpty)
                {
                    var end = rest.IndexOf('\n');
                    var length = end < 0 ? rest.Length : end;
                    var room = MaxLineChars - line.Length;
                    if (length > room)
                    {
                        line.Append(rest[..room]);
                        Emit();
                        rest = rest[room..];
                        continue;
                    }

                    line.Append(rest[..length]);
                    if (end < 0)
                    {
                        break;
                    }

                    Emit();
                    rest = rest[(end + 1)..];
                }

                spec.OnOutputRead?.Invoke();
            }

            if (line.Length > 0)
            {
                Emit();
                spec.OnOutputRead?.Invoke();
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            // The pipe closed under us when the process was disposed; the tail has what was read.
        }
        finally
        {
            // Process.Dispose leaves a stream the caller has read to the caller: without this its pipe stays open
            // until a finalizer runs, which an idle daemon may not do for a long time (the soak counted them).
            reader.Dispose();
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (!HasExited || Spec.OwnProcessGroup)
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

        _process.Dispose();
    }
}
