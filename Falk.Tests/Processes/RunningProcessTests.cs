using Falk.Core.Processes;

namespace Falk.Tests.Processes;

public sealed class RunningProcessTests
{
    [Fact(Timeout = 60_000)]
    public async Task A_process_whose_output_is_drained_leaves_no_pipe_of_it_open_in_the_daemon()
    {
        var ct = TestContext.Current.CancellationToken;
        var process = RunningProcess.Start(new ProcessSpec(["sleep", "1"]));
        await using (process)
        {
            // The child's stdout and stderr are the write ends of the pipes whose read ends this process holds.
            var pipes = new List<string?> { new FileInfo($"/proc/{process.Pid}/fd/1").LinkTarget, new FileInfo($"/proc/{process.Pid}/fd/2").LinkTarget };
            pipes.Should().OnlyContain(target => target != null && target.StartsWith("pipe:", StringComparison.Ordinal));

            await process.WaitForExitAsync(ct);
            await process.WaitForOutputAsync(ct);

            // No garbage collection in between: the pipes must be closed, not left to a finalizer.
            var open = Directory.EnumerateFiles("/proc/self/fd").Select(SafeLinkTarget).Where(pipes.Contains).ToList();
            open.Should().BeEmpty("a drained stream's pipe is closed at once; an idle daemon may not run a finalizer for hours");
        }
    }

    private static string? SafeLinkTarget(string path)
    {
        try
        {
            return new FileInfo(path).LinkTarget;
        }
        catch (IOException)
        {
            // Closed while listed.
            return null;
        }
    }
}
