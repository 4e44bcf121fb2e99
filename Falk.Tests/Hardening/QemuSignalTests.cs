using System.Diagnostics;
using System.Text.Json.Nodes;
using Falk.Core.Unix;
using Falk.Core.Waiting;
using Falk.Tests.Backends.Qemu;
using Falk.Tests.Fixtures;
using Microsoft.Data.Sqlite;

namespace Falk.Tests.Hardening;

/// <summary>
/// Issue 13 item 6 for QEMU: a QEMU process group is signalled only while it provably belongs to the machine. A QEMU
/// that ended while the daemon was away, whose pid now names an unrelated process, is never "killed" again.
/// </summary>
[Collection("qemu")]
public sealed class QemuSignalTests
{
    [Fact(Timeout = 300_000)]
    public async Task A_recorded_QEMU_whose_pid_now_leads_an_unrelated_session_is_not_signalled_when_the_daemon_comes_back()
    {
        var ct = TestContext.Current.CancellationToken;
        var guest = await QemuGuest.BuildAsync(ct);
        using var work = new TempDirectory();
        var baseImage = work.File("base.qcow2");
        File.Copy(guest.BaseImage, baseImage);
        var daemon = await FalkDaemon.StartAsync(guest.Template("guest", baseImage), ct, onShutdown: "keep");
        await using (daemon)
        {
            var id = (await daemon.Client.CreateAsync("guest", ct))["id"]!.GetValue<string>();
            await daemon.Client.BootAsync(id, ct, "");
            var qemu = ProcessTable.WithArgument("falk-" + id).Should().ContainSingle().Subject;
            await daemon.SignalDaemonOnlyAsync(kill: true, ct);
            ProcessTree.Kill(qemu);
            await Wait.UntilAsync(
                _ => Task.FromResult(ProcessTree.IsAlive(qemu) ? ProbeOutcome.NotYet<bool>("QEMU still runs") : ProbeOutcome.Done(true)),
                TimeSpan.FromMilliseconds(20), TimeSpan.FromSeconds(10), "QEMU to end", ct);

            // The pid number passes to an unrelated process that leads a session and group of its own, as QEMU did: the
            // record now names its pid, group and session, with QEMU's start time.
            using var stranger = Process.Start(new ProcessStartInfo("setsid", ["sleep", "1000"]))!;
            try
            {
                await Wait.UntilAsync(
                    _ => Task.FromResult(ProcessTree.Read(stranger.Id) is { Session: var sid } && sid == stranger.Id ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>("not in its own session yet")),
                    TimeSpan.FromMilliseconds(10), TimeSpan.FromSeconds(10), "the stranger to lead its session", ct);
                var strangerStart = ProcessTree.StartTime(stranger.Id);
                PointRecordAt(daemon, id, stranger.Id);

                await daemon.StartProcessAsync(ct);

                (await daemon.Client.ListAsync(ct)).Should().BeEmpty("the machine's QEMU is gone; the stranger is not it");
                daemon.Output.Should().Contain($"Machine {id} (recorded running) was gone after restart");
                ProcessTree.StartTime(stranger.Id).Should().Be(strangerStart);
                ProcessTree.IsAlive(stranger.Id).Should().BeTrue("a process that merely holds the recorded pid is never signalled");
                stranger.HasExited.Should().BeFalse();
            }
            finally
            {
                stranger.Kill();
            }
        }
    }

    /// <summary>Rewrites the machine's recorded QEMU pid, group and session (not its start time) to <paramref name="pid"/>.</summary>
    private static void PointRecordAt(FalkDaemon daemon, string id, int pid)
    {
        using var db = new SqliteConnection($"Data Source={Path.Combine(daemon.Directory.File("state"), "falk.db")};Pooling=false");
        db.Open();
        using var read = db.CreateCommand();
        read.CommandText = "SELECT handle FROM machines WHERE id = $id";
        read.Parameters.AddWithValue("$id", id);
        var handle = JsonNode.Parse((string)read.ExecuteScalar()!)!.AsObject();
        handle["ProcessGroup"].Should().NotBeNull("the record holds QEMU's session and group");
        handle["Pid"] = pid;
        handle["ProcessGroup"] = pid;
        handle["Session"] = pid;
        using var write = db.CreateCommand();
        write.CommandText = "UPDATE machines SET handle = $handle WHERE id = $id";
        write.Parameters.AddWithValue("$handle", handle.ToJsonString());
        write.Parameters.AddWithValue("$id", id);
        write.ExecuteNonQuery().Should().Be(1);
    }
}
