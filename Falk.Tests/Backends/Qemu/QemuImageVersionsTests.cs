using Falk.Core.Backends.Qemu;
using Falk.Core.Processes;
using Falk.Tests.Fixtures;
using Microsoft.Extensions.Logging.Abstractions;

namespace Falk.Tests.Backends.Qemu;

/// <summary>Which image versions stay after a daemon restart: those machines taken back use, and the current one.</summary>
public sealed class QemuImageVersionsTests
{
    [Fact]
    public void After_a_restart_a_version_a_machine_taken_back_uses_stays_until_the_machine_releases_it()
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
