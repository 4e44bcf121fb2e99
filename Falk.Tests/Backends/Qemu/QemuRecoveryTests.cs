using System.Globalization;
using System.Net;
using Falk.Core.Unix;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Backends.Qemu;

/// <summary>
/// A daemon with <c>on_shutdown = keep</c> that stops or dies and starts again on the same state folder: QEMU guests are
/// taken back over QMP, or cleaned up, and nothing of them leaks. Each test runs its own daemon and cleans up every
/// QEMU of its instance, whatever happens.
/// </summary>
[Collection("qemu")]
public sealed class QemuRecoveryTests
{
    /// <summary>SIGPIPE is signal 13: bit 12 of the SigIgn mask in /proc/PID/status.</summary>
    private const ulong SigPipeMask = 1UL << 12;

    [Fact(Timeout = 420_000)]
    public async Task After_SIGTERM_with_keep_the_guest_keeps_running_and_the_next_start_takes_it_back_with_its_id_port_lease_and_ssh()
    {
        var ct = TestContext.Current.CancellationToken;
        var guest = await QemuGuest.BuildAsync(ct);
        using var work = new TempDirectory();
        var daemon = await StartDaemonAsync(guest, work, extra: string.Empty, ct);
        await using (daemon)
        await using (KillLeftoversAtEnd(daemon))
        {
            var created = await daemon.Client.CreateAsync("guest", ct);
            var id = created["id"]!.GetValue<string>();
            var port = created["ssh"]!["port"]!.GetValue<int>();
            var machineFolder = Path.Combine(daemon.Directory.File("state"), "machines", id);
            await daemon.Client.BootAsync(id, ct, "?wait=ssh&timeout=150");
            var pid = ProcessTable.WithArgument("falk-" + id).Single();
            (SignalsIgnored(pid) & SigPipeMask).Should().NotBe(0UL, "QEMU must outlive its output pipes to the daemon");

            (await daemon.SignalDaemonOnlyAsync(kill: false, ct)).Should().Be(0);
            ProcessTable.WithArgument("falk-" + id).Should().Equal([pid], "keep leaves QEMU running");
            (await guest.SshAsync(port, "chantal", "echo alive", ct)).Should().Be("alive\n", "the guest runs on while the daemon is away");

            await daemon.StartProcessAsync(ct);
            var back = (await daemon.Client.ListAsync(ct)).Should().ContainSingle().Which!;

            back["id"]!.GetValue<string>().Should().Be(id);
            back["state"]!.GetValue<string>().Should().Be("running");
            back["ssh"]!["port"]!.GetValue<int>().Should().Be(port);
            back["lease_expires_at"]!.GetValue<DateTimeOffset>().Should().Be(created["lease_expires_at"]!.GetValue<DateTimeOffset>());
            daemon.Output.Should().Contain($"Machine {id}: took back QEMU pid {pid.ToString(CultureInfo.InvariantCulture)}");
            (await guest.SshAsync(port, "chantal", "id -un", ct)).Should().Be("chantal\n");
            ProcessTable.WithArgument("falk-" + id).Should().Equal([pid], "the same QEMU, not a new one");

            using (var stop = await daemon.Client.PostJsonAsync($"v1/machines/{id}/stop", new { timeout_seconds = 90 }, ct))
            {
                var stopped = await stop.JsonAsync(ct);
                stop.StatusCode.Should().Be(HttpStatusCode.OK, stopped.ToJsonString());
                stopped["state"]!.GetValue<string>().Should().Be("stopped");
            }

            ProcessTable.WithArgument("falk-" + id).Should().BeEmpty("stop powered the taken-back guest down over QMP");
            File.Exists(Path.Combine(machineFolder, "overlay.qcow2")).Should().BeTrue("a stopped machine keeps its disk");

            await daemon.Client.DeleteMachineAsync(id, ct);

            Directory.Exists(machineFolder).Should().BeFalse("the overlay, QMP socket, pid file and console went with the machine");
            (await daemon.Client.ListAsync(ct)).Should().BeEmpty();
        }
    }

    [Fact(Timeout = 300_000)]
    public async Task A_machine_whose_QEMU_died_while_the_daemon_was_down_is_cleaned_up_at_the_next_start_and_only_its_own_orphan_overlays_go()
    {
        var ct = TestContext.Current.CancellationToken;
        var guest = await QemuGuest.BuildAsync(ct);
        using var work = new TempDirectory();
        var prefix = work.File("run");
        var daemon = await StartDaemonAsync(guest, work, extra: $"overlay_image = {prefix}", ct);
        await using (daemon)
        await using (KillLeftoversAtEnd(daemon))
        {
            var id = (await daemon.Client.CreateAsync("guest", ct))["id"]!.GetValue<string>();
            (await daemon.Client.BootAsync(id, ct, ""))["state"]!.GetValue<string>().Should().Be("running");
            var pid = ProcessTable.WithArgument("falk-" + id).Single();
            await daemon.SignalDaemonOnlyAsync(kill: true, ct);

            // While the daemon is down, QEMU dies; an overlay of an unrecorded machine of this daemon (its work folder
            // is in the state folder) and one of another daemon sharing the prefix lie around.
            ProcessTree.Kill(pid);
            var stateDirectory = daemon.Directory.File("state");
            Directory.CreateDirectory(Path.Combine(stateDirectory, "machines", "mnotrecorded1"));
            await File.WriteAllTextAsync($"{prefix}-mnotrecorded1.qcow2", "orphan", ct);
            await File.WriteAllTextAsync($"{prefix}-motherdaemon1.qcow2", "someone else's", ct);

            await daemon.StartProcessAsync(ct);

            (await daemon.Client.ListAsync(ct)).Should().BeEmpty();
            daemon.Output.Should().Contain($"Machine {id} (recorded running) was gone after restart");
            File.Exists($"{prefix}-{id}.qcow2").Should().BeFalse("the dead machine's overlay is removed");
            Directory.Exists(Path.Combine(stateDirectory, "machines", id)).Should().BeFalse();
            File.Exists($"{prefix}-mnotrecorded1.qcow2").Should().BeFalse("an overlay of an unrecorded machine of this daemon is removed");
            File.Exists($"{prefix}-motherdaemon1.qcow2").Should().BeTrue("an overlay this daemon cannot tell as its own is left alone");
            File.Exists(work.File("base.qcow2")).Should().BeTrue("the base image is never an orphan");
        }
    }

    [Fact(Timeout = 900_000)]
    public async Task Killing_the_daemon_at_random_points_of_QEMU_lifecycles_never_leaks_a_QEMU_an_overlay_or_a_port()
    {
        var ct = TestContext.Current.CancellationToken;
        var guest = await QemuGuest.BuildAsync(ct);
        using var work = new TempDirectory();
        var prefix = work.File("run");
        var daemon = await StartDaemonAsync(guest, work, extra: $"overlay_image = {prefix}", ct);
        await using (daemon)
        await using (KillLeftoversAtEnd(daemon))
        {
            // A lifecycle takes about a second: the kill lands in create, in boot, in delete or after it.
            var (_, kills) = await KillChaos.RunAsync(daemon, new ChaosPlan("guest", Cycles: 8, KillsIn: cycle => cycle % 2 == 0, LatestKill: TimeSpan.FromMilliseconds(1_200), MinimumCompleted: 4,
                AssertBackendOwnsOnlyAsync: (ids, because, _) =>
                {
                    Directory.GetFiles(work.Path, "run-*").Select(f => Path.GetFileNameWithoutExtension(f)["run-".Length..])
                        .Should().BeSubsetOf(ids, $"every overlay belongs to a listed machine ({because})");
                    return Task.CompletedTask;
                }), ct);

            kills.Should().Be(4);
            ProcessTree.WithEnvironment("FALK_INSTANCE", daemon.Instance).Should().BeEmpty();
        }
    }

    private static Task<FalkDaemon> StartDaemonAsync(QemuGuest guest, TempDirectory work, string extra, CancellationToken ct)
    {
        var baseImage = work.File("base.qcow2");
        File.Copy(guest.BaseImage, baseImage);
        return FalkDaemon.StartAsync(guest.Template("guest", baseImage, extra: extra), ct, onShutdown: "keep");
    }

    /// <summary>With keep, stopping the daemon at the end leaves its guests: they are killed here, pass or fail.</summary>
    private static AsyncLeftoverKiller KillLeftoversAtEnd(FalkDaemon daemon) => new(daemon.Instance);

    private static ulong SignalsIgnored(int pid)
    {
        var line = File.ReadLines($"/proc/{pid}/status").Single(l => l.StartsWith("SigIgn:", StringComparison.Ordinal));
        return ulong.Parse(line["SigIgn:".Length..].Trim(), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
    }

    private sealed class AsyncLeftoverKiller(string instance) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            var pids = ProcessTree.WithEnvironment("FALK_INSTANCE", instance);
            foreach (var pid in pids)
            {
                ProcessTree.Kill(pid);
            }

            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
            while (pids.Any(ProcessTree.IsAlive) && DateTime.UtcNow < deadline)
            {
                await Task.Delay(100, CancellationToken.None);
            }
        }
    }
}
