using Microsoft.Extensions.Logging;

namespace Falk.Core.Machines;

/// <summary>What a job does to a machine; it decides whether a delete may overtake the job.</summary>
internal enum JobKind
{
    Launch,
    Stop,
    Snapshot,
    Commit,

    /// <summary>Forcing a failed machine off: not overtaken by a delete, which would do the same.</summary>
    Kill,

    /// <summary>The delete itself, which waits for whatever job runs to let go.</summary>
    Destroy,
}

/// <summary>
/// One backend job at a time per machine (launch, stop, snapshot, commit, kill, destroy), as libvirt runs one job
/// per domain. A job's token ends when the caller gives up or the machine is deleted; a delete that overtakes a job
/// is answered as 404 here and nowhere else, and a job that throws what no one expected leaves the machine failed
/// (and off) rather than half-way.
/// </summary>
public sealed class MachineJobs(MachineTransitions transitions, ILogger<MachineService> logger)
{
    /// <summary>Waits for the machine's job slot. Dispose the job to give it back.</summary>
    internal static async Task<MachineJob> BeginAsync(Machine machine, JobKind kind, CancellationToken cancellationToken)
    {
        if (kind is JobKind.Destroy or JobKind.Kill)
        {
            await machine.Operation.WaitAsync(CancellationToken.None).ConfigureAwait(false);
            return new MachineJob(machine, null);
        }

        var linked = CancellationTokenSource.CreateLinkedTokenSource(machine.Lifetime.Token, cancellationToken);
        try
        {
            await machine.Operation.WaitAsync(linked.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (machine.Lifetime.IsCancellationRequested)
        {
            linked.Dispose();
            throw new MachineNotFoundException(machine.Id);
        }
        catch
        {
            linked.Dispose();
            throw;
        }

        var job = new MachineJob(machine, linked);
        if (machine.Lifetime.IsCancellationRequested)
        {
            // The slot was free before the delete's cancellation reached the wait.
            job.Dispose();
            throw new MachineNotFoundException(machine.Id);
        }

        return job;
    }

    /// <summary>Runs <paramref name="work"/> as a job of <paramref name="kind"/> on the machine.</summary>
    internal async Task<T> RunAsync<T>(Machine machine, JobKind kind, Func<CancellationToken, Task<T>> work, CancellationToken cancellationToken)
    {
        using var job = await BeginAsync(machine, kind, cancellationToken).ConfigureAwait(false);
        try
        {
            var result = await work(job.Token).ConfigureAwait(false);

            // Finished just as a delete began: what the job made goes with the machine.
            return machine.Lifetime.IsCancellationRequested ? throw new MachineNotFoundException(machine.Id) : result;
        }
        catch (Exception e) when (machine.Lifetime.IsCancellationRequested && e is OperationCanceledException or FalkException)
        {
            throw new MachineNotFoundException(machine.Id);
        }
        catch (Exception e) when (e is not FalkException and not OperationCanceledException)
        {
            var error = $"{kind.ToString().ToLowerInvariant()} failed: {e.Message}";
            await FailHoldingJobAsync(machine, error).ConfigureAwait(false);
            throw new BackendOperationException($"machine {machine.Id}: {error}", e);
        }
    }

    internal Task RunAsync(Machine machine, JobKind kind, Func<CancellationToken, Task> work, CancellationToken cancellationToken) =>
        RunAsync(machine, kind, async token =>
        {
            await work(token).ConfigureAwait(false);
            return true;
        }, cancellationToken);

    /// <summary>A booting or running machine failed: it becomes "failed" and is forced off. A machine being deleted is left to the delete.</summary>
    internal async Task FailAsync(Machine machine, string error)
    {
        if (!Fail(machine, error))
        {
            return;
        }

        using var job = await BeginAsync(machine, JobKind.Kill, CancellationToken.None).ConfigureAwait(false);
        await machine.Instance.KillAsync(CancellationToken.None).ConfigureAwait(false);
    }

    private async Task FailHoldingJobAsync(Machine machine, string error)
    {
        if (Fail(machine, error))
        {
            await machine.Instance.KillAsync(CancellationToken.None).ConfigureAwait(false);
        }
    }

    private bool Fail(Machine machine, string error)
    {
        if (!transitions.TryTo(machine, s => s is not MachineState.Failed, MachineState.Failed, error))
        {
            return false;
        }

        MachineLog.Failed(logger, machine.Id, error);
        return true;
    }

    /// <summary>A delete that has begun makes the machine unknown to every other request.</summary>
    internal static void ThrowIfDeleting(Machine machine)
    {
        lock (machine.Sync)
        {
            if (machine.Deletion is not null)
            {
                throw new MachineNotFoundException(machine.Id);
            }
        }
    }
}

/// <summary>A machine's job slot, held until disposed.</summary>
internal sealed class MachineJob(Machine machine, CancellationTokenSource? linked) : IDisposable
{
    private int _disposed;

    /// <summary>Ends when the caller gives up or the machine is deleted (never, for a destroy or kill).</summary>
    public CancellationToken Token { get; } = linked?.Token ?? CancellationToken.None;

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            machine.Operation.Release();
            linked?.Dispose();
        }
    }
}
