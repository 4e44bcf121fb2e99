using Falk.Core.Backends;
using Falk.Core.Backends.Lxd;
using Falk.Core.Config;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Backends.Lxd;

/// <summary>The keys of <c>type = lxd</c> and <c>type = incus</c> sections, and of their sockets in <c>[falk]</c>.</summary>
public sealed class LxdConfigTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void Lxd_and_incus_sections_load_with_their_own_sockets_profiles_limits_and_config_keys()
    {
        var config = Load("""
            [falk]
            incus_socket = run/incus.sock

            [ci]
            type = lxd
            base_image = debian-12
            profiles = default, ci-net
            memory = 2GiB
            cpus = 2
            storage_pool = fast
            config = security.nesting=true environment.CI="yes please"
            ssh_user = chantal

            [ci-incus]
            type = incus
            base_image = debian-12
            ssh_user = chantal
            """);

        var lxd = (LxdTemplateOptions)config.Templates.Single(t => t.Id == "ci").BackendOptions;
        lxd.Profiles.Should().Equal("default", "ci-net");
        lxd.StoragePool.Should().Be("fast");
        lxd.Config.Should().BeEquivalentTo(new Dictionary<string, string>
        {
            ["limits.memory"] = "2GiB",
            ["limits.cpu"] = "2",
            ["security.nesting"] = "true",
            ["environment.CI"] = "yes please",
        });
        config.Templates.Single(t => t.Id == "ci-incus").Type.Should().Be("incus");
        config.Daemon.BackendOptions["lxd"].Should().Be(new LxdDaemonOptions("/var/lib/lxd/unix.socket"));
        config.Daemon.BackendOptions["incus"].Should().Be(new LxdDaemonOptions(_dir.File("run/incus.sock")));
    }

    [Fact]
    public void Bad_lxd_keys_are_one_line_errors_each()
    {
        var errors = Errors("""
            [falk]
            [ci]
            type = lxd
            memory = lots
            cpus = two
            config = user.falk.machine=x notakey
            profiles = de/fault
            ssh_user = chantal
            """);

        errors.Should().HaveCount(6);
        errors.Should().Contain(e => e.EndsWith("[ci] base_image: required", StringComparison.Ordinal) || e.Contains("[ci] base_image:", StringComparison.Ordinal));
        errors.Should().Contain(e => e.Contains("[ci] memory: 'lots' is not a size", StringComparison.Ordinal));
        errors.Should().Contain(e => e.Contains("[ci] cpus: 'two'", StringComparison.Ordinal));
        errors.Should().Contain(e => e.Contains("'user.falk.machine': keys under user.falk. are Falk's own marks", StringComparison.Ordinal));
        errors.Should().Contain(e => e.Contains("'notakey' is not KEY=VALUE", StringComparison.Ordinal));
        errors.Should().Contain(e => e.Contains("[ci] profiles: 'de/fault'", StringComparison.Ordinal));
    }

    [Fact]
    public void A_virtual_machine_template_is_refused_with_a_clear_error_on_a_host_without_vhost_vsock()
    {
        var text = """
            [falk]
            [vm]
            type = lxd
            base_image = debian-12
            vm = true
            ssh_user = chantal
            """;

        if (File.Exists(LxdTemplateOptions.VsockDevice))
        {
            ((LxdTemplateOptions)Load(text).Templates[0].BackendOptions).VirtualMachine.Should().BeTrue();
            return;
        }

        Errors(text).Should().ContainSingle().Which.Should().EndWith(
            "[vm] vm: this host cannot run LXD virtual machines: /dev/vhost-vsock is missing (load the vhost_vsock kernel module, or use containers)");
    }

    private FalkConfig Load(string text)
    {
        var path = _dir.File("falk.conf");
        File.WriteAllText(path, text);
        return ConfigLoader.Load(path, BackendModules.Descriptors);
    }

    private string[] Errors(string text)
    {
        var act = () => Load(text);
        return act.Should().Throw<ConfigException>().Which.Errors.ToArray();
    }
}
