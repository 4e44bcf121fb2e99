using Falk.Core.Backends.Qemu;
using Falk.Core.Processes;
using Falk.Tests.Fixtures;
using Microsoft.Extensions.Logging.Abstractions;

namespace Falk.Tests.Backends.Qemu;

/// <summary>Which image versions stay after a daemon restart: those machines taken back use, and the current one.</summary>
[Collection("qemu")]
public sealed class QemuImageVersionsTests
{
    [Fact(Timeout = 120_000)]
    public async Task After_a_restart_a_version_a_machine_taken_back_uses_stays_until_the_machine_releases_it()
    {
        var ct = TestContext.Current.CancellationToken;
        var guest = await QemuGuest.BuildAsync(ct);
        using var dir = new TempDirectory();
        var baseImage = dir.File("small.qcow2");
        await new ProcessRunner().RunAsync(new ProcessSpec(["qemu-img", "create", "-q", "-f", "qcow2", baseImage, "64M"]), TimeSpan.FromSeconds(30), ct);
        var versions = Directory.CreateDirectory(baseImage + ".falk-versions").FullName;
        var v1 = Path.Combine(versions, "v1.qcow2");
        File.Copy(baseImage, v1);
        File.CreateSymbolicLink(Path.Combine(versions, "current"), "v1.qcow2");

        var daemon = await FalkDaemon.StartAsync(guest.Template("small", baseImage), ct, onShutdown: "keep");
        await using (daemon)
        {
            // A machine on v1; then a management commit makes v2 current. v1 stays: the machine uses it.
            var user = (await daemon.Client.CreateAsync("small", ct))["id"]!.GetValue<string>();
            string manage;
            using (var created = await daemon.Client.PostJsonAsync("v1/machines", new { template = "small", manage = true }, ct))
            {
                manage = (await created.JsonAsync(ct))["id"]!.GetValue<string>();
            }

            using (var commit = await daemon.Client.PostJsonAsync($"v1/machines/{manage}/commit", new { timeout_seconds = 30 }, ct))
            {
                (await commit.JsonAsync(ct))["version"]!.GetValue<string>().Should().Be("v2");
            }

            await daemon.Client.DeleteMachineAsync(manage, ct);
            File.Exists(v1).Should().BeTrue("a machine uses it");

            (await daemon.StopAsync(ct)).Should().Be(0);
            await daemon.StartProcessAsync(ct);

            (await daemon.Client.StateAsync(user, ct)).Should().Be("prepared", "the machine was taken back");
            File.Exists(v1).Should().BeTrue("the machine taken back still uses it, though it is no longer current");
            new FileInfo(Path.Combine(versions, "current")).LinkTarget.Should().Be("v2.qcow2");

            await daemon.Client.DeleteMachineAsync(user, ct);

            Directory.GetFileSystemEntries(versions).Select(Path.GetFileName).Should().BeEquivalentTo(["current", "v2.qcow2"], "v1 went with its last machine");
        }
    }

    [Fact]
    public void A_version_adopted_for_a_machine_survives_the_sweep_of_unused_versions_until_it_is_released()
    {
        using var dir = new TempDirectory();
        var baseImage = dir.File("base.qcow2");
        File.WriteAllText(baseImage, "base");
        var folder = Directory.CreateDirectory(baseImage + ".falk-versions").FullName;
        var (v1, v2, v3) = (Path.Combine(folder, "v1.qcow2"), Path.Combine(folder, "v2.qcow2"), Path.Combine(folder, "v3.qcow2"));
        foreach (var version in new[] { v1, v2, v3 })
        {
            File.WriteAllText(version, "version");
        }

        File.CreateSymbolicLink(Path.Combine(folder, "current"), "v3.qcow2");
        using var versions = new QemuImageVersions(baseImage, new QemuImg(new ProcessRunner()), NullLogger.Instance);

        versions.Adopt(v1);
        versions.RemoveUnusedVersions();

        File.Exists(v1).Should().BeTrue("a machine taken back still uses it");
        File.Exists(v2).Should().BeFalse("no machine uses it and it is not current");
        File.Exists(v3).Should().BeTrue("it is current");
        File.Exists(baseImage).Should().BeTrue();

        versions.Release(v1);

        File.Exists(v1).Should().BeFalse("its last machine released it");
        File.Exists(v3).Should().BeTrue();
    }
}
