using Falk.Core.Processes;
using Falk.Core.Unix;
using Falk.Core.Waiting;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Processes;

/// <summary>Session marks on real processes: what a launch left is found by its group and session, and a reused id never is.</summary>
public sealed class SessionMarkTests
{
    [Fact(Timeout = 30_000)]
    public async Task After_its_leader_ends_the_mark_finds_what_left_the_group_and_killing_the_process_ends_it()
    {
        var ct = TestContext.Current.CancellationToken;
        var marker = Random.Shared.Next(100_000, 999_999);
        var process = RunningProcess.Start(new ProcessSpec(
            ["/bin/sh", "-c", $"sleep {marker}1 & /usr/bin/perl -e 'setpgrp(0, 0); exec @ARGV' sleep {marker}2 & exit 0"]) { OwnProcessGroup = true });
        await using (process)
        {
            using var leftovers = ProcessTable.KillOnDispose($"sleep {marker}");
            await process.WaitForExitAsync(ct);
            var mark = process.Session!;
            var sleeps = await Wait.UntilAsync(
                _ =>
                {
                    var found = ProcessTable.WithArgument($"sleep {marker}").Where(p => ProcessTree.Arguments(p)[0] == "sleep").ToList();
                    return Task.FromResult(found.Count == 2 ? ProbeOutcome.Done(found) : ProbeOutcome.NotYet<List<int>>($"{found.Count} sleeps"));
                },
                TimeSpan.FromMilliseconds(20), TimeSpan.FromSeconds(10), "both sleeps", ct);
            sleeps.Select(p => ProcessTree.Read(p)!.Value.ProcessGroup).Should().Contain(g => g != mark.ProcessGroup, "one sleep left the group");

            mark.Members(ProcessTree.All()).Select(p => p.Pid).Should().BeEquivalentTo(sleeps, "the group and the session outlive their leader");

            await process.KillAsync(ct);
            await Wait.UntilAsync(
                _ => Task.FromResult(ProcessTable.WithArgument($"sleep {marker}").Count == 0 ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>("sleeps left")),
                TimeSpan.FromMilliseconds(20), TimeSpan.FromSeconds(10), "the sleeps to end", ct);
        }
    }

    [Fact(Timeout = 30_000)]
    public async Task A_mark_whose_leader_pid_names_another_process_or_that_comes_from_another_boot_finds_nothing()
    {
        var ct = TestContext.Current.CancellationToken;
        var marker = Random.Shared.Next(100_000, 999_999);
        var process = RunningProcess.Start(new ProcessSpec(["/bin/sh", "-c", $"sleep {marker}; :"]) { OwnProcessGroup = true });
        await using (process)
        {
            var mark = process.Session!;
            await Wait.UntilAsync(
                _ => Task.FromResult(mark.Members(ProcessTree.All()).Count == 2 ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>("sleep not started")),
                TimeSpan.FromMilliseconds(20), TimeSpan.FromSeconds(10), "the shell and its sleep", ct);
            var reused = mark with { LeaderStartTime = mark.LeaderStartTime - 1 };
            var otherBoot = mark with { BootId = "another-boot" };

            reused.Members(ProcessTree.All()).Should().BeEmpty("the pid names a process that started later than the recorded leader");
            reused.LeaderHoldsIds.Should().BeFalse();
            otherBoot.Members(ProcessTree.All()).Should().BeEmpty("start times of another boot mean nothing");
            otherBoot.LeaderHoldsIds.Should().BeFalse();
            mark.LeaderHoldsIds.Should().BeTrue();
        }
    }
}
