using Falk.Core.Backends;
using Falk.Core.Backends.Custom;
using Falk.Core.Backends.Lxd;
using Falk.Core.Backends.Podman;
using Falk.Core.Config;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Config;

public sealed class ConfigLoaderTests : IDisposable
{
    private const string HostKeyLine = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKj4Bx1THcLfzCUjcnYG8WPZ7XGZcHnG9nV01iP8Zdhg root@vm";

    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    private string Write(string text, string name = "falk.conf")
    {
        var path = _dir.File(name);
        File.WriteAllText(path, text);
        return path;
    }

    private static FalkConfig Load(string path) => ConfigLoader.Load(path, BackendModules.Descriptors);

    private string[] Errors(string text)
    {
        var path = Write(text);
        var act = () => Load(path);
        return act.Should().Throw<ConfigException>().Which.Errors.ToArray();
    }

    [Fact]
    public void An_original_falk_conf_with_all_four_machine_types_loads_unchanged()
    {
        File.WriteAllText(_dir.File("vm.pub"), HostKeyLine + "\n");
        var path = Write($"""
            # falk.conf as the original daemon read it
            ; both comment styles
            [falk]
            name = falk-vm-provider
            control_socket = /run/kevin/falk
            control_socket_permissions = 770
            control_socket_group = root
            vm_ports = [7888,8000]

            [debian-sid]
            name = debian-sid
            type = qemu
            base_image = /srv/falk/debian-sid.qcow2
            overlay_image = /tmp/falk-debian-sid-overlay
            command = qemu-system-x86_64 -machine type=q35,accel=kvm -m 4G -drive file={"{IMAGENAME}"},if=virtio -netdev user,id=net0,hostfwd=tcp:127.0.0.1:{"{SSHPORT}"}-:22 -device virtio-net-pci,netdev=net0 -nographic
            ssh_user = chantal
            ssh_host = localhost
            ssh_known_host_key_file = vm.pub

            [arch-podman]
            type = podman
            base_image = localhost/arch-ssh:latest
            command = podman run --rm -p {"{SSHPORT}"}:22 {"{BASE_IMAGE}"}
            ssh_user = chantal

            [lxd-ubuntu]
            type = lxd
            base_image = ubuntu-22.04
            command = lxc launch {"{BASE_IMAGE}"} {"{CONTAINERNAME}"}
            ssh_host = __dynamic__
            ssh_user = chantal

            [local-sshd]
            name = local
            type = custom
            prepare = /usr/bin/true
            launch = /usr/sbin/sshd -D -e -p {"{SSHPORT}"} -f "/etc/falk/sshd config"
            cleanup = /usr/bin/true
            ssh_user = chantal
            ssh_known_host_key = {HostKeyLine}
            """);

        var config = Load(path);

        config.Daemon.Name.Should().Be("falk-vm-provider");
        config.Daemon.ControlSocket.Should().Be("/run/kevin/falk");
        config.Daemon.ControlSocketPermissions.Should().Be((UnixFileMode)Convert.ToInt32("770", 8));
        config.Daemon.ControlSocketGroup.Should().Be("root");
        config.Daemon.VmPorts.Should().Be(new PortRange(7888, 8000));
        config.Templates.Select(t => t.Id).Should().Equal("arch-podman", "debian-sid", "local-sshd", "lxd-ubuntu");
        var local = config.Templates.Single(t => t.Id == "local-sshd");
        local.Should().Match<TemplateDefinition>(t => t.Name == "local" && t.Type == "custom" && t.SshUser == "chantal" && t.SshHost == "127.0.0.1");
        var custom = (CustomTemplateOptions)local.BackendOptions;
        custom.Launch.Should().Equal("/usr/sbin/sshd", "-D", "-e", "-p", "{SSHPORT}", "-f", "/etc/falk/sshd config");
        local.KnownHostKeys.Should().ContainSingle().Which.PublicKeyLine.Should().Be(string.Join(' ', HostKeyLine.Split(' ')[..2]));
        var qemu = (Falk.Core.Backends.Qemu.QemuTemplateOptions)config.Templates.Single(t => t.Id == "debian-sid").BackendOptions;
        qemu.BaseImage.Should().Be("/srv/falk/debian-sid.qcow2");
        qemu.OverlayPrefix.Should().Be("/tmp/falk-debian-sid-overlay");
        qemu.Command.Should().Contain("file={IMAGENAME},if=virtio");
        var podman = (PodmanTemplateOptions)config.Templates.Single(t => t.Id == "arch-podman").BackendOptions;
        podman.BaseImage.Should().Be("localhost/arch-ssh:latest");
        podman.IgnoredCommand.Should().StartWith("podman run", "the original's command line is kept only to be logged as ignored");
        var lxd = config.Templates.Single(t => t.Id == "lxd-ubuntu");
        lxd.SshHost.Should().Be("__dynamic__");
        var lxdOptions = (LxdTemplateOptions)lxd.BackendOptions;
        lxdOptions.BaseImage.Should().Be("ubuntu-22.04");
        lxdOptions.Profiles.Should().Equal("default");
        lxdOptions.IgnoredCommand.Should().StartWith("lxc launch");
        config.Warnings.Should().NotContain(w => w.Contains("[lxd-ubuntu] type:", StringComparison.Ordinal))
            .And.NotContain(w => w.Contains("[arch-podman] type:", StringComparison.Ordinal))
            .And.NotContain(w => w.Contains("[debian-sid] type:", StringComparison.Ordinal));
    }

    [Fact]
    public void A_relative_known_host_key_file_is_read_relative_to_the_config_file()
    {
        Directory.CreateDirectory(_dir.File("keys"));
        File.WriteAllText(_dir.File("keys/known_hosts"), $"# comment\n[localhost]:7888 {HostKeyLine}\n");
        var path = Write("""
            [falk]
            [vm]
            type = custom
            launch = /bin/true
            ssh_user = u
            ssh_known_host_key_file = keys/known_hosts
            """);

        var previous = Environment.CurrentDirectory;
        Environment.CurrentDirectory = "/";
        try
        {
            Load(path).Templates[0].KnownHostKeys.Should().ContainSingle().Which.Type.Should().Be("ssh-ed25519");
        }
        finally
        {
            Environment.CurrentDirectory = previous;
        }
    }

    [Fact]
    public void Defaults_apply_when_keys_are_absent()
    {
        var config = Load(Write("""
            [falk]
            [vm]
            type = custom
            launch = /bin/true
            ssh_user = u
            """));

        config.Daemon.VmPorts.Should().Be(new PortRange(7888, 8000));
        config.Daemon.MaxMachines.Should().Be(113);
        config.Templates[0].Name.Should().Be("vm");
        config.Templates[0].SshHost.Should().Be("127.0.0.1", "localhost is resolved once, at load, to the IPv4 loopback");
        config.Templates[0].KnownHostKeys.Should().BeEmpty();
        config.Warnings.Should().ContainSingle(w => w.Contains("host keys will be observed, not verified", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("vm_ports = [8000,7000]", "[falk] vm_ports: '[8000,7000]' must be two ports")]
    [InlineData("vm_ports = 7000", "[falk] vm_ports: '7000' is not a port range")]
    [InlineData("control_socket_permissions = 0x770", "[falk] control_socket_permissions: '0x770' is not an octal file mode")]
    [InlineData("control_socket_permissions = 779", "[falk] control_socket_permissions: '779' is not an octal file mode")]
    [InlineData("max_machines = lots", "[falk] max_machines: 'lots' is not a whole number")]
    [InlineData("console_max_bytes = 1000", "[falk] console_max_bytes: '1000' is not a whole number from 1048576 to 2147483647")]
    [InlineData("console_max_bytes = 16M", "[falk] console_max_bytes: '16M' is not a whole number")]
    public void A_bad_daemon_key_is_one_line_naming_file_section_and_key(string line, string expected)
    {
        var errors = Errors($"""
            [falk]
            {line}
            """);

        errors.Should().ContainSingle().Which.Should().StartWith(_dir.File("falk.conf") + ": ").And.Contain(expected);
    }

    [Theory]
    [InlineData("type = custom\nlaunch = /bin/true", "[vm] ssh_user: is required")]
    [InlineData("ssh_user = u\nlaunch = /bin/true", "[vm] type: is required")]
    [InlineData("type = custom\nssh_user = u", "[vm] launch: is required")]
    [InlineData("type = vmware\nssh_user = u", "[vm] type: unknown machine type 'vmware'")]
    [InlineData("type = custom\nssh_user = u\nlaunch = sshd -p '{SSHPORT}", "[vm] launch: unterminated single quote")]
    [InlineData("type = custom\nssh_user = u\nlaunch = run {IMAGENAME}", "[vm] launch: unknown placeholder {IMAGENAME}")]
    [InlineData("type = custom\nssh_user = u\nlaunch = /bin/true\nssh_port = 70000", "[vm] ssh_port: '70000' is not a whole number from 1 to 65535")]
    [InlineData("type = custom\nssh_user = u\nlaunch = /bin/true\nname = has space", "[vm] name: 'has space' may contain only")]
    [InlineData("type = custom\nssh_user = u\nlaunch = /bin/true\nssh_known_host_key = ssh-ed25519 notbase64!", "[vm] ssh_known_host_key: the ssh-ed25519 key is not valid base64")]
    [InlineData("type = custom\nssh_user = u\nlaunch = /bin/true\nssh_known_host_key_file = missing.pub", "[vm] ssh_known_host_key_file: cannot read")]
    [InlineData("type = custom\nssh_user = u\nlaunch = /bin/true\nssh_host = no-such-host.invalid", "[vm] ssh_host: 'no-such-host.invalid' cannot be resolved")]
    [InlineData("type = custom\nssh_user = u\nlaunch = /bin/true\nssh_served_by_launch = maybe", "[vm] ssh_served_by_launch: 'maybe' is not a boolean")]
    [InlineData("type = podman\nssh_user = u\nbase_image = x\nhost_key = shared", "[vm] host_key: 'shared' is neither machine")]
    [InlineData("type = custom\nssh_user = u\nlaunch = /bin/true\npool_size = -1", "[vm] pool_size: '-1' is not a whole number from 0 to 10000")]
    [InlineData("type = custom\nssh_user = u\nlaunch = /bin/true\npool_size = some", "[vm] pool_size: 'some' is not a whole number")]
    [InlineData("type = custom\nssh_user = u\nlaunch = /bin/true\npool_size = 3\nmax_machines = 2", "[vm] pool_size: 3 is more than the template's max_machines (2)")]
    [InlineData("type = custom\nssh_user = u\nlaunch = /bin/true\npool_size = 2\nssh_port = 2222", "[vm] pool_size: 2 machines cannot share the fixed ssh_port 2222")]
    public void A_bad_template_key_is_one_line_naming_file_section_and_key(string body, string expected)
    {
        var errors = Errors($"[falk]\n[vm]\n{body}\n");

        errors.Should().ContainSingle().Which.Should().Contain(expected).And.StartWith(_dir.File("falk.conf"));
    }

    [Theory]
    [InlineData("localhost", "127.0.0.1")]
    [InlineData("LOCALHOST", "127.0.0.1")]
    [InlineData("::1", "::1")]
    [InlineData("[::1]", "::1")]
    [InlineData("::ffff:127.0.0.2", "127.0.0.2")]
    [InlineData("10.1.2.3", "10.1.2.3")]
    public void Ssh_host_is_resolved_once_to_the_literal_address_that_is_handed_out(string configured, string handedOut)
    {
        var config = Load(Write($"""
            [falk]
            [vm]
            type = custom
            launch = /bin/true
            ssh_user = u
            ssh_host = {configured}
            """));

        config.Templates[0].SshHost.Should().Be(handedOut);
    }

    [Fact]
    public void Warm_pools_that_would_hold_more_than_max_machines_are_one_line()
    {
        var errors = Errors("""
            [falk]
            max_machines = 4
            [a]
            type = custom
            launch = /bin/true
            ssh_user = u
            pool_size = 3
            [b]
            type = custom
            launch = /bin/true
            ssh_user = u
            pool_size = 2
            """);

        errors.Should().ContainSingle().Which.Should().Be(_dir.File("falk.conf") + ": pool_size: the templates' warm pools hold 5 machines, more than max_machines (4) allows");
    }

    [Fact]
    public void A_template_without_pool_size_has_no_warm_pool()
    {
        var config = Load(Write("""
            [falk]
            [vm]
            type = custom
            launch = /bin/true
            ssh_user = u
            [warm]
            type = custom
            launch = /bin/true
            ssh_user = u
            pool_size = 2
            """));

        config.Templates.Select(t => t.PoolSize).Should().Equal(0, 2);
    }

    [Fact]
    public void Every_error_of_a_file_is_reported_at_once()
    {
        var errors = Errors("""
            [falk]
            vm_ports = nope
            [a]
            type = custom
            launch = /bin/true
            [b]
            type = custom
            ssh_user = u
            """);

        errors.Should().HaveCount(3);
        errors.Should().AllSatisfy(e => e.Should().NotContain("\n"));
    }

    [Fact]
    public void Templates_may_share_a_name_as_a_pool_and_keep_their_section_ids()
    {
        var config = Load(Write("""
            [falk]
            [vm-a]
            name = debian
            type = custom
            launch = /bin/true
            ssh_user = u
            ssh_known_host_key = HOSTKEY
            [vm-b]
            name = debian
            type = custom
            launch = /bin/true
            ssh_user = u
            ssh_known_host_key = HOSTKEY
            """.Replace("HOSTKEY", HostKeyLine, StringComparison.Ordinal)));

        config.Templates.Select(t => (t.Id, t.Name)).Should().Equal(("vm-a", "debian"), ("vm-b", "debian"));
        config.Warnings.Should().BeEmpty();
    }

    [Fact]
    public void A_justin_era_file_is_read_with_its_justin_section_as_the_daemon_section()
    {
        var config = Load(Write("""
            [justin]
            name = ci-justin
            control_socket = /run/kevin/justin
            [vm]
            type = custom
            launch = /bin/true
            ssh_user = u
            ssh_known_host_key = HOSTKEY
            """.Replace("HOSTKEY", HostKeyLine, StringComparison.Ordinal)));

        config.Daemon.Name.Should().Be("ci-justin");
        config.Daemon.ControlSocket.Should().Be("/run/kevin/justin");
        config.Daemon.ProtocolEra.Should().Be(DaemonOptions.JustinEra);
        config.Templates.Should().ContainSingle().Which.Id.Should().Be("vm");
    }

    [Fact]
    public void A_missing_file_and_a_broken_line_are_one_line_each()
    {
        var missing = () => Load(_dir.File("nope.conf"));
        missing.Should().Throw<ConfigException>().Which.Errors.Should().Equal($"{_dir.File("nope.conf")}: no such file");

        Errors("[falk]\nthis is not ini\n").Should().ContainSingle().Which.Should().StartWith(_dir.File("falk.conf") + ": ");
    }

    [Fact]
    public void A_line_indented_under_a_key_continues_its_value_as_configparser_reads_it()
    {
        var config = Load(Write("""
            [falk]
            [box]
            type = podman
            base_image = localhost/box
            environment = A=1
                B="two words"
            ; a comment inside the value is skipped
              C=3

            ssh_user = chantal
            """));

        var box = config.Templates.Should().ContainSingle().Subject;
        ((PodmanTemplateOptions)box.BackendOptions).Environment.Should().Equal("A=1", "B=two words", "C=3");
        box.SshUser.Should().Be("chantal", "a blank line ends the value; the next key is a key again");
        config.Warnings.Should().BeEmpty("no continuation line is read as a key of its own");
    }

    [Fact]
    public void Unknown_keys_are_a_warning_not_an_error()
    {
        var config = Load(Write("""
            [falk]
            colour = blue
            [vm]
            type = custom
            launch = /bin/true
            ssh_user = u
            ssh_known_host_key = ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKj4Bx1THcLfzCUjcnYG8WPZ7XGZcHnG9nV01iP8Zdhg
            lanch = typo
            """));

        config.Warnings.Should().Contain(w => w.EndsWith("[falk] colour: unknown key, ignored", StringComparison.Ordinal))
            .And.Contain(w => w.EndsWith("[vm] lanch: unknown key, ignored", StringComparison.Ordinal));
    }
}
