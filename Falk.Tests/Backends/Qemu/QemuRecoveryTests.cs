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
        var seed = Random.Shared.Next();
        var random = new Random(seed);
        var daemon = await StartDaemonAsync(guest, work, extra: $"overlay_image = {prefix}", ct);
        await using (daemon)
        await using (KillLeftoversAtEnd(daemon))
        {
            var stateDirectory = daemon.Directory.File("state");
            var instance = InstanceOf(daemon);
            for (var cycle = 0; cycle < 5; cycle++)
            {
                var lifecycle = LifecycleAsync(daemon.Client, ct);
                // A lifecycle takes about a second: the kill lands in create, in boot, in delete or after it.
                await Task.Delay(random.Next(0, 1_200), ct);
                await daemon.SignalDaemonOnlyAsync(kill: true, ct);
                await lifecycle;
                await daemon.StartProcessAsync(ct);

                await AssertNothingLeakedAsync(daemon.Client, stateDirectory, instance, work.Path, $"cycle {cycle}, seed {seed}", ct);

                // Whatever was taken back is deleted, running or not: at most one TCG guest at a time.
                foreach (var machine in await daemon.Client.ListAsync(ct))
                {
                    await daemon.Client.DeleteMachineAsync(machine!["id"]!.GetValue<string>(), ct);
                }
            }

            ProcessTree.WithEnvironment("FALK_INSTANCE", instance).Should().BeEmpty();
            Directory.GetFiles(work.Path, "run-*").Should().BeEmpty();
            Directory.EnumerateDirectories(Path.Combine(stateDirectory, "machines")).Should().BeEmpty();
        }
    }

    private static Task<FalkDaemon> StartDaemonAsync(QemuGuest guest, TempDirectory work, string extra, CancellationToken ct)
    {
        var baseImage = work.File("base.qcow2");
        File.Copy(guest.BaseImage, baseImage);
        return FalkDaemon.StartAsync(guest.Template("guest", baseImage, extra: extra), ct, onShutdown: "keep");
    }

    private static string InstanceOf(FalkDaemon daemon) =>
        new Falk.Core.Config.DaemonOptions { StateDirectory = daemon.Directory.File("state") }.InstanceId;

    /// <summary>With keep, stopping the daemon at the end leaves its guests: they are killed here, pass or fail.</summary>
    private static AsyncLeftoverKiller KillLeftoversAtEnd(FalkDaemon daemon) => new(InstanceOf(daemon));

    /// <summary>create → boot → delete; a daemon killed half way makes any step fail, which is expected here.</summary>
    private static async Task LifecycleAsync(HttpClient client, CancellationToken ct)
    {
        try
        {
            using var created = await client.PostJsonAsync("v1/machines", new { template = "guest" }, ct);
            var id = (await created.JsonAsync(ct))["id"]!.GetValue<string>();
            using var booted = await client.PostAsync($"v1/machines/{id}/boot", null, ct);
            using var deleted = await client.DeleteAsync($"v1/machines/{id}", ct);
        }
        catch (Exception e) when (e is HttpRequestException or System.Text.Json.JsonException or IOException or NullReferenceException)
        {
            // The daemon died under the request.
        }
    }

    /// <summary>Every QEMU and overlay this daemon made belongs to a machine it lists, and no two machines share a port.</summary>
    private static async Task AssertNothingLeakedAsync(HttpClient client, string stateDirectory, string instance, string overlayFolder, string because, CancellationToken ct)
    {
        var machines = await client.ListAsync(ct);
        var ids = machines.Select(m => m!["id"]!.GetValue<string>()).ToHashSet();
        machines.Select(m => m!["ssh"]!["port"]!.GetValue<int>()).Should().OnlyHaveUniqueItems(because);
        foreach (var pid in ProcessTree.WithEnvironment("FALK_INSTANCE", instance))
        {
            ids.Should().Contain(ProcessTree.EnvironmentValue(pid, "FALK_MACHINE_ID"), $"QEMU {pid} must belong to a listed machine ({because})");
        }

        Directory.GetFiles(overlayFolder, "run-*").Select(f => Path.GetFileNameWithoutExtension(f)["run-".Length..])
            .Should().BeSubsetOf(ids, $"every overlay belongs to a listed machine ({because})");
        var folders = Path.Combine(stateDirectory, "machines");
        if (Directory.Exists(folders))
        {
            Directory.EnumerateDirectories(folders).Select(Path.GetFileName).Should().BeSubsetOf(ids, because);
        }
    }

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
