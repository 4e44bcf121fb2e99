namespace Falk.Core.Processes;

/// <summary>Runs commands to completion or starts long-lived ones. One place for every subprocess Falk makes.</summary>
public interface IProcessRunner
{
    /// <summary>
    /// Runs <paramref name="spec"/> to completion. A non-zero exit, a failure to start or running longer than
    /// <paramref name="timeout"/> is a <see cref="ProcessFailedException"/> quoting the command and its stderr tail;
    /// on timeout or cancellation the process tree is killed before this returns.
    /// </summary>
    Task<ProcessResult> RunAsync(ProcessSpec spec, TimeSpan timeout, CancellationToken cancellationToken);

    /// <summary>Starts a long-lived process; the caller owns it and must dispose it.</summary>
    RunningProcess Start(ProcessSpec spec);
}

public sealed class ProcessRunner : IProcessRunner
{
    public async Task<ProcessResult> RunAsync(ProcessSpec spec, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var process = Start(spec);
        await using (process.ConfigureAwait(false))
        {
            int exitCode;
            try
            {
                exitCode = await process.WaitForExitAsync(cancellationToken).WaitAsync(timeout, cancellationToken).ConfigureAwait(false);
            }
            catch (TimeoutException e)
            {
                await process.KillAsync(CancellationToken.None).ConfigureAwait(false);
                throw new ProcessFailedException(spec.Command, $"did not finish within {timeout.TotalSeconds:0} s and was killed", null, process.Stderr.Tail(), e);
            }
            catch (OperationCanceledException)
            {
                await process.KillAsync(CancellationToken.None).ConfigureAwait(false);
                throw;
            }

            // The streams end shortly after the process; don't hang on a grandchild that holds them open.
            try
            {
                await process.WaitForOutputAsync(cancellationToken).WaitAsync(TimeSpan.FromSeconds(2), cancellationToken).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                // Keep what was read.
            }

            if (exitCode != 0)
            {
                throw new ProcessFailedException(spec.Command, $"exited with code {exitCode}", exitCode, process.Stderr.Tail());
            }

            return new ProcessResult(exitCode, process.Stdout.Tail(), process.Stderr.Tail());
        }
    }

    public RunningProcess Start(ProcessSpec spec) => RunningProcess.Start(spec);
}
