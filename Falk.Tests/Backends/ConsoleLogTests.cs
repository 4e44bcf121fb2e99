using System.Text;
using Falk.Core.Backends;
using Falk.Core.Waiting;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Backends;

/// <summary>A capped console log keeps its newest output within the cap, and a reader following it crosses rotations.</summary>
public sealed class ConsoleLogTests
{
    private static string Line(int n) => $"line-{n:0000}";

    [Fact]
    public async Task A_capped_log_keeps_the_newest_lines_within_its_cap()
    {
        var ct = TestContext.Current.CancellationToken;
        using var dir = new TempDirectory();
        var path = dir.File("console.log");
        using (var writer = new ConsoleLogWriter(path, 1000))
        {
            for (var n = 1; n <= 500; n++)
            {
                writer.WriteLine(Line(n));
            }
        }

        (new FileInfo(path).Length + new FileInfo(ConsoleLog.RotatedPath(path)).Length).Should().BeLessThanOrEqualTo(1000);
        using var copy = new MemoryStream();
        await ConsoleLog.CopyAsync(path, copy, follow: false, stopped: null, ct);
        var lines = Encoding.UTF8.GetString(copy.ToArray()).TrimEnd('\n').Split('\n');
        lines.Length.Should().BeGreaterThan(50);
        lines.Should().Equal(Enumerable.Range(500 - lines.Length + 1, lines.Length).Select(Line));
    }

    [Fact]
    public async Task A_follower_gets_every_line_across_a_rotation()
    {
        var ct = TestContext.Current.CancellationToken;
        using var dir = new TempDirectory();
        var path = dir.File("console.log");
        var stopped = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var copy = new MemoryStream();
        using var writer = new ConsoleLogWriter(path, 1000);
        for (var n = 1; n <= 40; n++)
        {
            writer.WriteLine(Line(n));
        }

        writer.Flush();
        var following = ConsoleLog.CopyAsync(path, copy, follow: true, stopped.Task, ct);
        await Wait.UntilAsync(
            _ => Task.FromResult(copy.Length >= 400 ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>("not read yet")),
            TimeSpan.FromMilliseconds(50), TimeSpan.FromSeconds(10), "the first lines to be read", ct);

        // Line 51 does not fit in the first file (500 bytes): it is moved aside while the follower holds it open.
        for (var n = 41; n <= 60; n++)
        {
            writer.WriteLine(Line(n));
        }

        writer.Flush();
        stopped.SetResult();
        await following;

        Encoding.UTF8.GetString(copy.ToArray()).TrimEnd('\n').Split('\n').Should().Equal(Enumerable.Range(1, 60).Select(Line));
    }
}
