using System.Net;
using System.Text.Json.Nodes;
using Falk.Core.Waiting;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Backends.Qemu;

/// <summary>
/// <c>boot = resume</c>: machines start from a running guest Falk saved once per image version, through the real falkd
/// and QEMU under TCG. Each test runs a daemon of its own on a copy of the guest's image, so saved guests never mix.
/// </summary>
[Collection("qemu")]
public sealed class QemuResumeTests : IAsyncLifetime
{
    private readonly TempDirectory _work = new();
    private QemuGuest _guest = null!;
    private FalkDaemon _daemon = null!;

    private HttpClient Client => _daemon.Client;

    private string BaseImage => _work.File("base.qcow2");

    private string VersionsDirectory => BaseImage + ".falk-versions";

    private string StateDirectory => Path.Combine(_daemon.Directory.Path, "state");

    public async ValueTask InitializeAsync()
    {
        var ct = TestContext.Current.CancellationToken;
        _guest = await QemuGuest.BuildAsync(ct);
        File.Copy(_guest.BaseImage, BaseImage);
        _daemon = await FalkDaemon.StartAsync(_guest.Template("fast", BaseImage, extra: "boot = resume"), ct);
    }

    public async ValueTask DisposeAsync()
    {
        await _daemon.DisposeAsync();
        _work.Dispose();
    }

    [Fact(Timeout = 400_000)]
    public async Task Resumed_machines_answer_ssh_with_the_pinned_key_on_their_own_ports_keep_their_files_apart_and_leave_nothing_behind()
    {
        var ct = TestContext.Current.CancellationToken;
        var saved = await SavedGuestAsync("base.qcow2", ct);

        var first = await Client.CreateAsync("fast", ct);
        var second = await Client.CreateAsync("fast", ct);
        var (firstId, firstPort) = (first["id"]!.GetValue<string>(), first["ssh"]!["port"]!.GetValue<int>());
        var (secondId, secondPort) = (second["id"]!.GetValue<string>(), second["ssh"]!["port"]!.GetValue<int>());
        firstPort.Should().NotBe(secondPort);
        await Client.BootAsync(firstId, ct, "?wait=ssh&timeout=120");
        await Client.BootAsync(secondId, ct, "?wait=ssh&timeout=120");

        var events = await Client.ReadEventsAsync(0, 100, ct, quiet: TimeSpan.FromSeconds(1));
        events.Where(e => e.Type == "resumed").Select(e => e.Data["machine_id"]!.GetValue<string>()).Should().BeEquivalentTo([firstId, secondId]);
        events.Should().NotContain(e => e.Type == "resume_failed");
        (await _guest.SshAsync(firstPort, "chantal", "echo mine > /home/chantal/own && sync && cat /home/chantal/own", ct)).Should().Be("mine\n");
        (await _guest.SshAsync(secondPort, "chantal", "ls /home/chantal", ct)).Should().NotContain("own", "each resumed machine writes on an overlay of its own");
        var console = await ConsoleAsync(secondId, ct);
        console.Should().NotContain("falk-init: [", "the guest was loaded, not booted: its kernel never started here");

        await Client.DeleteMachineAsync(firstId, ct);
        await Client.DeleteMachineAsync(secondId, ct);
        ProcessTable.WithArgument(StateDirectory).Should().BeEmpty("no QEMU of a machine or of the saved guest is left");
        Directory.GetFiles(Path.Combine(StateDirectory, "machines"), "*", SearchOption.AllDirectories).Should().BeEmpty();
        (await Client.GetFromJsonNodeAsync("v1/info", ct))["capacity"]!["ports_in_use"]!.GetValue<int>().Should().Be(0);
        Directory.GetFiles(VersionsDirectory).Select(Path.GetFileName).Should().BeEquivalentTo(
            [Path.GetFileName(saved), Path.GetFileName(Path.ChangeExtension(saved, ".qcow2"))],
            "the saved guest stays with its version, and nothing half-written is left");
    }

    [Fact(Timeout = 400_000)]
    public async Task A_saved_guest_qemu_rejects_is_discarded_and_the_machine_boots_cold_saying_so()
    {
        var ct = TestContext.Current.CancellationToken;
        var saved = await SavedGuestAsync("base.qcow2", ct);
        await using (var file = new FileStream(saved, FileMode.Open, FileAccess.Write))
        {
            file.Position = 4096;
            await file.WriteAsync(new byte[65536].Select((_, i) => (byte)(i * 7)).ToArray(), ct);
        }

        var machine = await Client.CreateAsync("fast", ct);
        var id = machine["id"]!.GetValue<string>();
        await Client.BootAsync(id, ct, "?wait=ssh&timeout=180");

        (await _guest.SshAsync(machine["ssh"]!["port"]!.GetValue<int>(), "chantal", "echo up", ct)).Should().Be("up\n");
        var events = await Client.ReadEventsAsync(0, 100, ct, quiet: TimeSpan.FromSeconds(1));
        var failed = events.Should().ContainSingle(e => e.Type == "resume_failed").Subject;
        failed.Data["machine_id"]!.GetValue<string>().Should().Be(id);
        failed.Data["detail"]!.GetValue<string>().Should().Contain("booting cold");
        events.Should().NotContain(e => e.Type == "resumed");
        _daemon.Output.Should().Contain($"Machine {id}: resume failed, booting cold");
        (await ConsoleAsync(id, ct)).Should().Contain("falk-init: [", "it booted");
        File.Exists(saved).Should().BeFalse("a saved guest QEMU would not load is discarded");

        // The next machine saves a new guest and resumes from it.
        var next = (await Client.CreateAsync("fast", ct))["id"]!.GetValue<string>();
        await Client.BootAsync(next, ct, "?wait=ssh&timeout=300");
        (await Client.ReadEventsAsync(0, 100, ct, quiet: TimeSpan.FromSeconds(1))).Should().Contain(e => e.Type == "resumed" && e.Data["machine_id"]!.GetValue<string>() == next);
        await Client.DeleteMachineAsync(id, ct);
        await Client.DeleteMachineAsync(next, ct);
        ProcessTable.WithArgument(StateDirectory).Should().BeEmpty();
        Directory.GetFiles(VersionsDirectory, "*.vmstate").Should().ContainSingle().Which.Should().NotBe(saved);
        Directory.GetFiles(VersionsDirectory, "*.qcow2").Should().ContainSingle("the rejected guest's layer went once no machine used it");
    }

    [Fact(Timeout = 500_000)]
    public async Task A_commit_saves_a_guest_of_the_new_version_and_the_old_versions_saved_guest_goes_with_it()
    {
        var ct = TestContext.Current.CancellationToken;
        var old = await SavedGuestAsync("base.qcow2", ct);
        using var created = await Client.PostJsonAsync("v1/machines", new { template = "fast", manage = true }, ct);
        var manage = await created.JsonAsync(ct);
        created.StatusCode.Should().Be(HttpStatusCode.Created);
        var manageId = manage["id"]!.GetValue<string>();
        await Client.BootAsync(manageId, ct, "?wait=ssh&timeout=120");
        await _guest.SshAsync(manage["ssh"]!["port"]!.GetValue<int>(), "chantal", "echo installed > /home/chantal/managed && sync", ct);
        using (var commit = await Client.PostJsonAsync($"v1/machines/{manageId}/commit", new { timeout_seconds = 60 }, ct))
        {
            commit.StatusCode.Should().Be(HttpStatusCode.OK, (await commit.JsonAsync(ct)).ToJsonString());
        }

        await Client.DeleteMachineAsync(manageId, ct);
        var fresh = await SavedGuestAsync("v1.qcow2", ct);
        await Wait.UntilAsync(
            _ => Task.FromResult(File.Exists(old) ? ProbeOutcome.NotYet<bool>(old + " is still there") : ProbeOutcome.Done(true)),
            TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(30), "the old version's saved guest to go", ct);
        Directory.GetFiles(VersionsDirectory).Select(Path.GetFileName).Should().BeEquivalentTo(
            ["current", "v1.qcow2", Path.GetFileName(fresh), Path.GetFileName(Path.ChangeExtension(fresh, ".qcow2"))]);

        var machine = await Client.CreateAsync("fast", ct);
        var id = machine["id"]!.GetValue<string>();
        await Client.BootAsync(id, ct, "?wait=ssh&timeout=120");
        (await _guest.SshAsync(machine["ssh"]!["port"]!.GetValue<int>(), "chantal", "cat /home/chantal/managed", ct)).Should().Be("installed\n");
        (await Client.ReadEventsAsync(0, 100, ct, quiet: TimeSpan.FromSeconds(1))).Should().Contain(e => e.Type == "resumed" && e.Data["machine_id"]!.GetValue<string>() == id);
        await Client.DeleteMachineAsync(id, ct);
        ProcessTable.WithArgument(StateDirectory).Should().BeEmpty();
    }

    [Fact(Timeout = 500_000)]
    public async Task A_resumed_machine_booted_again_after_a_stop_and_a_restart_boots_cold_on_its_own_disk()
    {
        var ct = TestContext.Current.CancellationToken;
        using var dir = new TempDirectory();
        var baseImage = dir.File("keep.qcow2");
        File.Copy(_guest.BaseImage, baseImage);
        var daemon = await FalkDaemon.StartAsync(_guest.Template("kept", baseImage, extra: "boot = resume"), ct, onShutdown: "keep");
        await using (daemon)
        {
            await Wait.UntilAsync(
                _ => Task.FromResult(Directory.Exists(baseImage + ".falk-versions") && Directory.GetFiles(baseImage + ".falk-versions", "*.vmstate").Length == 1
                    ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>("no saved guest yet")),
                TimeSpan.FromMilliseconds(200), TimeSpan.FromMinutes(4), "a saved guest", ct);
            var machine = await daemon.Client.CreateAsync("kept", ct);
            var (id, port) = (machine["id"]!.GetValue<string>(), machine["ssh"]!["port"]!.GetValue<int>());
            await daemon.Client.BootAsync(id, ct, "?wait=ssh&timeout=120");
            await _guest.SshAsync(port, "chantal", "echo kept > /home/chantal/kept && sync", ct);
            using (var stop = await daemon.Client.PostJsonAsync($"v1/machines/{id}/stop", new { timeout_seconds = 60 }, ct))
            {
                stop.StatusCode.Should().Be(HttpStatusCode.OK);
            }

            (await daemon.SignalDaemonOnlyAsync(kill: false, ct)).Should().Be(0);
            await daemon.StartProcessAsync(ct);
            await daemon.Client.BootAsync(id, ct, "?wait=ssh&timeout=180");

            (await _guest.SshAsync(port, "chantal", "cat /home/chantal/kept", ct)).Should().Be("kept\n", "the machine's own disk, written after its resume");
            (await daemon.Client.ReadEventsAsync(0, 100, ct, quiet: TimeSpan.FromSeconds(1))).Should().NotContain(
                e => e.Type == "resumed" || e.Type == "resume_failed", "a disk that was written to is not the one the saved guest expects: it boots cold");
            await daemon.Client.DeleteMachineAsync(id, ct);
            ProcessTable.WithArgument(Path.Combine(daemon.Directory.Path, "state")).Should().BeEmpty();
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task A_boot_key_other_than_cold_or_resume_is_one_readable_line()
    {
        var ct = TestContext.Current.CancellationToken;
        using var dir = new TempDirectory();
        var config = dir.File("falk.conf");
        await File.WriteAllTextAsync(config, $"[falk]\ncontrol_socket = {dir.File("s.sock")}\nstate_dir = {dir.File("state")}\n\n" + _guest.Template("x", BaseImage, extra: "boot = warm"), ct);

        var (exitCode, stdout, stderr) = await FalkDaemon.RunToEndAsync(["--check-config", "-c", config], ct);

        exitCode.Should().NotBe(0);
        (stdout + stderr).Trim().Should().Be($"falkd: error: {config}: [x] boot: 'warm' is neither 'cold' (boot the guest) nor 'resume' (start from a saved running guest)");
    }

    /// <summary>Waits until the daemon has saved a guest of version file <paramref name="version"/>; returns its state file.</summary>
    private async Task<string> SavedGuestAsync(string version, CancellationToken ct) =>
        await Wait.UntilAsync(
            _ => Task.FromResult(Directory.Exists(VersionsDirectory) && Directory.GetFiles(VersionsDirectory, version + ".resume-*.vmstate") is [var state]
                ? ProbeOutcome.Done(state)
                : ProbeOutcome.NotYet<string>("no saved guest yet")),
            TimeSpan.FromMilliseconds(200), TimeSpan.FromMinutes(4), $"a saved guest of {version}", ct);

    private async Task<string> ConsoleAsync(string id, CancellationToken ct)
    {
        using var response = await Client.GetAsync($"v1/machines/{id}/console", ct);
        return await response.Content.ReadAsStringAsync(ct);
    }
}
