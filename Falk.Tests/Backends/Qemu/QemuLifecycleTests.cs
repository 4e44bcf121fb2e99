using System.Net;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using Falk.Core.Waiting;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Backends.Qemu;

/// <summary>Real QEMU machines (under TCG unless FALK_TEST_QEMU_ACCEL says otherwise) through the real daemon.</summary>
[Collection("qemu")]
public sealed class QemuLifecycleTests(QemuDaemonFixture fixture) : IClassFixture<QemuDaemonFixture>
{
    private HttpClient Client => fixture.Client;

    [Fact(Timeout = 240_000)]
    public async Task A_volatile_machine_boots_to_an_ssh_login_and_delete_leaves_no_overlay_socket_process_or_port()
    {
        var ct = TestContext.Current.CancellationToken;
        var created = await Client.CreateAsync("guest", ct);
        var id = created["id"]!.GetValue<string>();
        var port = created["ssh"]!["port"]!.GetValue<int>();
        var work = Path.Combine(fixture.StateDirectory, "machines", id);
        File.Exists(Path.Combine(work, "overlay.qcow2")).Should().BeTrue("prepare makes the overlay");

        var booted = await Client.BootAsync(id, ct, "?wait=ssh&timeout=120");

        booted["state"]!.GetValue<string>().Should().Be("running");
        booted["ssh"]!["known_host_key"]!.GetValue<string>().Should().Contain(fixture.Guest.HostKey.PublicKeyLine.Split(' ')[1]);
        (await fixture.Guest.SshAsync(port, "chantal", "id -un; cat /proc/sys/kernel/hostname", ct)).Should().StartWith("chantal\n");
        File.Exists(Path.Combine(work, "qemu", "qmp.sock")).Should().BeTrue();
        ProcessTable.WithArgument("falk-" + id).Should().ContainSingle("one QEMU process, named after the machine");

        await Client.DeleteMachineAsync(id, ct);

        ProcessTable.WithArgument("falk-" + id).Should().BeEmpty();
        System.IO.Directory.Exists(work).Should().BeFalse("the overlay, QMP socket, pid file and console went with the machine");
        PortIsFree(port).Should().BeTrue();
        (await Client.ListAsync(ct)).Should().NotContain(m => m!["id"]!.GetValue<string>() == id);
    }

    [Fact(Timeout = 240_000)]
    public async Task A_guest_that_powers_itself_off_is_stopped_and_wait_returns()
    {
        var ct = TestContext.Current.CancellationToken;
        var (id, port) = await BootAsync(ct);
        var wait = Client.PostAsync($"v1/machines/{id}/wait?condition=stopped&timeout=120", null, ct);

        await fixture.Guest.SshFireAndForgetAsync(port, "root", "poweroff", ct);

        using var response = await wait;
        var body = await response.JsonAsync(ct);
        response.StatusCode.Should().Be(HttpStatusCode.OK, body.ToJsonString());
        body["state"]!.GetValue<string>().Should().Be("stopped");
        ProcessTable.WithArgument("falk-" + id).Should().BeEmpty();
        await Client.DeleteMachineAsync(id, ct);
    }

    [Fact(Timeout = 240_000)]
    public async Task Stop_powers_the_guest_down_over_QMP_and_the_machine_boots_again_from_the_same_disk()
    {
        var ct = TestContext.Current.CancellationToken;
        var (id, port) = await BootAsync(ct);
        await fixture.Guest.SshAsync(port, "chantal", "echo kept > /home/chantal/kept && sync", ct);
        var watch = System.Diagnostics.Stopwatch.StartNew();

        using var stop = await Client.PostJsonAsync($"v1/machines/{id}/stop", new { timeout_seconds = 60 }, ct);

        var stopped = await stop.JsonAsync(ct);
        stop.StatusCode.Should().Be(HttpStatusCode.OK, stopped.ToJsonString());
        stopped["state"]!.GetValue<string>().Should().Be("stopped");
        watch.Elapsed.Should().BeLessThan(TimeSpan.FromSeconds(30), "the guest powers down on the ACPI button; nothing waits for the 60 s timeout");
        ProcessTable.WithArgument("falk-" + id).Should().BeEmpty();

        await Client.BootAsync(id, ct, "?wait=ssh&timeout=120");
        (await fixture.Guest.SshAsync(port, "chantal", "cat /home/chantal/kept", ct)).Should().Be("kept\n");
        await Client.DeleteMachineAsync(id, ct);
    }

    [Fact(Timeout = 240_000)]
    public async Task A_stop_right_after_launch_presses_the_power_button_again_until_the_guest_listens()
    {
        var ct = TestContext.Current.CancellationToken;
        var id = (await Client.CreateAsync("guest", ct))["id"]!.GetValue<string>();
        await Client.BootAsync(id, ct, "?wait=none");
        var watch = System.Diagnostics.Stopwatch.StartNew();

        // The first system_powerdown arrives before the guest's acpid runs and is lost; the retries are not.
        using var stop = await Client.PostJsonAsync($"v1/machines/{id}/stop", new { timeout_seconds = 90 }, ct);

        var stopped = await stop.JsonAsync(ct);
        stop.StatusCode.Should().Be(HttpStatusCode.OK, stopped.ToJsonString());
        stopped["state"]!.GetValue<string>().Should().Be("stopped");
        watch.Elapsed.Should().BeLessThan(TimeSpan.FromSeconds(60), "the guest powers off once it boots far enough to listen");
        (await Client.GetStringAsync($"v1/machines/{id}/console", ct)).Should().NotContain("Kernel panic");
        await Client.DeleteMachineAsync(id, ct);
    }

    [Fact(Timeout = 240_000)]
    public async Task A_stop_without_grace_quits_QEMU_over_QMP_at_once()
    {
        var ct = TestContext.Current.CancellationToken;
        var (id, _) = await BootAsync(ct);
        var watch = System.Diagnostics.Stopwatch.StartNew();

        using var stop = await Client.PostJsonAsync($"v1/machines/{id}/stop", new { timeout_seconds = 0 }, ct);

        var stopped = await stop.JsonAsync(ct);
        stop.StatusCode.Should().Be(HttpStatusCode.OK, stopped.ToJsonString());
        stopped["state"]!.GetValue<string>().Should().Be("stopped");
        watch.Elapsed.Should().BeLessThan(TimeSpan.FromSeconds(5));
        ProcessTable.WithArgument("falk-" + id).Should().BeEmpty();
        fixture.Daemon.Output.Should().Contain($"Machine {id}: QEMU exited with code 0 (guest shutdown: host-qmp-quit)",
            "QEMU quit on QMP's quit (its SHUTDOWN event says so, and it exited with 0), it was not killed");
        await Client.DeleteMachineAsync(id, ct);
    }

    [Fact(Timeout = 240_000)]
    public async Task A_QEMU_killed_outside_Falk_is_failed_at_once_with_its_exit_code_and_console_tail_and_delete_cleans_up()
    {
        var ct = TestContext.Current.CancellationToken;
        var (id, port) = await BootAsync(ct);
        var work = Path.Combine(fixture.StateDirectory, "machines", id);
        var pid = int.Parse(File.ReadAllText(Path.Combine(work, "qemu", "qemu.pid")).Trim(), System.Globalization.CultureInfo.InvariantCulture);

        Falk.Core.Unix.ProcessTree.Kill(pid);

        var failed = await Wait.UntilAsync(async c =>
        {
            var machine = await Client.GetFromJsonNodeAsync($"v1/machines/{id}", c);
            return machine["state"]!.GetValue<string>() == "failed" ? ProbeOutcome.Done(machine) : ProbeOutcome.NotYet<JsonNode>("still " + machine["state"]);
        }, TimeSpan.FromMilliseconds(50), TimeSpan.FromSeconds(5), "the machine seen as failed", ct);
        failed["last_error"]!.GetValue<string>().Should().Contain("signal 9").And.Contain("exit code 137").And.Contain("output:");

        await Client.DeleteMachineAsync(id, ct);
        System.IO.Directory.Exists(work).Should().BeFalse();
        PortIsFree(port).Should().BeTrue();
    }

    [Fact(Timeout = 240_000)]
    public async Task A_guest_whose_kernel_panics_fails_the_boot_with_the_panic_in_the_output()
    {
        var ct = TestContext.Current.CancellationToken;
        var id = (await Client.CreateAsync("panics", ct))["id"]!.GetValue<string>();

        using var response = await Client.PostAsync($"v1/machines/{id}/boot?wait=ssh&timeout=120", null, ct);

        var problem = await response.ShouldBeProblemAsync(HttpStatusCode.BadGateway, "machine-failed", ct);
        problem["detail"]!.GetValue<string>().Should().Contain("panicked");
        problem["output_tail"]!.GetValue<string>().Should().Contain("Kernel panic");
        await Client.DeleteMachineAsync(id, ct);
    }

    [Fact(Timeout = 240_000)]
    public async Task The_console_is_the_serial_log_and_follow_streams_it_until_the_guest_stops()
    {
        var ct = TestContext.Current.CancellationToken;
        var (id, port) = await BootAsync(ct);
        var follow = Client.GetStringAsync($"v1/machines/{id}/console?follow=true", ct);
        await fixture.Guest.SshAsync(port, "root", "echo falk-console-marker > /dev/ttyS0", ct);

        using var stop = await Client.PostJsonAsync($"v1/machines/{id}/stop", new { timeout_seconds = 60 }, ct);
        stop.StatusCode.Should().Be(HttpStatusCode.OK);

        var followed = await follow.WaitAsync(TimeSpan.FromSeconds(30), ct);
        followed.Should().Contain("falk-console-marker");
        (await Client.GetStringAsync($"v1/machines/{id}/console", ct)).Should().Be(followed);
        await Client.DeleteMachineAsync(id, ct);
    }

    private async Task<(string Id, int Port)> BootAsync(CancellationToken ct)
    {
        var created = await Client.CreateAsync("guest", ct);
        var id = created["id"]!.GetValue<string>();
        await Client.BootAsync(id, ct, "?wait=ssh&timeout=120");
        return (id, created["ssh"]!["port"]!.GetValue<int>());
    }

    private static bool PortIsFree(int port)
    {
        try
        {
            using var listener = new TcpListener(IPAddress.Loopback, port);
            listener.Start();
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
