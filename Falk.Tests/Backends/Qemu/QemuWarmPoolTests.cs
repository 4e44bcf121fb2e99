using Falk.Tests.Fixtures;

namespace Falk.Tests.Backends.Qemu;

/// <summary>A warm pool of real QEMU guests (TCG unless FALK_TEST_QEMU_ACCEL says otherwise) through the real daemon.</summary>
[Collection("qemu")]
public sealed class QemuWarmPoolTests
{
    [Fact(Timeout = 300_000)]
    public async Task Pooled_guests_are_handed_out_booted_and_each_has_a_disk_of_its_own()
    {
        var ct = TestContext.Current.CancellationToken;
        var guest = await QemuGuest.BuildAsync(ct);
        using var work = new TempDirectory();
        var baseImage = work.File("base.qcow2");
        File.Copy(guest.BaseImage, baseImage);
        await using var daemon = await FalkDaemon.StartAsync(guest.Template("warm", baseImage, extra: "pool_size = 1"), ct);

        await daemon.Client.WaitForPoolAsync("warm", 1, ct, QemuGuest.BootTimeout);
        var first = await daemon.Client.CreateAsync("warm", ct);
        var firstId = first["id"]!.GetValue<string>();
        first["state"]!.GetValue<string>().Should().Be("running");
        (await daemon.Client.BootAsync(firstId, ct))["state"]!.GetValue<string>().Should().Be("running");
        ProcessTable.WithArgument("falk-" + firstId).Should().ContainSingle("the pooled guest is not launched again");
        await guest.SshAsync(first["ssh"]!["port"]!.GetValue<int>(), "chantal", "echo mine > ~/written", ct);

        await daemon.Client.WaitForPoolAsync("warm", 1, ct, QemuGuest.BootTimeout);
        var second = await daemon.Client.CreateAsync("warm", ct);
        var secondId = second["id"]!.GetValue<string>();
        second["state"]!.GetValue<string>().Should().Be("running");
        (await guest.SshAsync(second["ssh"]!["port"]!.GetValue<int>(), "chantal", "cat ~/written 2>/dev/null || echo absent", ct)).Trim()
            .Should().Be("absent", "every pooled guest starts from its own overlay of the image");

        await daemon.Client.DeleteMachineAsync(firstId, ct);
        await daemon.Client.DeleteMachineAsync(secondId, ct);
        ProcessTable.WithArgument("falk-" + firstId).Should().BeEmpty();
        ProcessTable.WithArgument("falk-" + secondId).Should().BeEmpty();
    }

    [Fact(Timeout = 400_000)]
    public async Task A_pool_of_resumed_guests_hands_out_machines_started_from_the_saved_guest()
    {
        var ct = TestContext.Current.CancellationToken;
        var guest = await QemuGuest.BuildAsync(ct);
        using var work = new TempDirectory();
        var baseImage = work.File("base.qcow2");
        File.Copy(guest.BaseImage, baseImage);
        await using var daemon = await FalkDaemon.StartAsync(guest.Template("warm", baseImage, extra: "pool_size = 1\nboot = resume"), ct);

        await daemon.Client.WaitForPoolAsync("warm", 1, ct, TimeSpan.FromMinutes(4));
        var machine = await daemon.Client.CreateAsync("warm", ct);
        var id = machine["id"]!.GetValue<string>();
        machine["state"]!.GetValue<string>().Should().Be("running");
        (await guest.SshAsync(machine["ssh"]!["port"]!.GetValue<int>(), "chantal", "echo up", ct)).Trim().Should().Be("up");

        var events = await daemon.Client.ReadEventsAsync(0, 1_000, ct, quiet: TimeSpan.FromSeconds(1));
        events.Where(e => e.Data["machine_id"]?.GetValue<string>() == id).Select(e => e.Type)
            .Should().Contain("resumed", "the pooled guest was started from the saved guest, not booted cold").And.NotContain("resume_failed");

        await daemon.Client.DeleteMachineAsync(id, ct);
        ProcessTable.WithArgument("falk-" + id).Should().BeEmpty();
    }
}
