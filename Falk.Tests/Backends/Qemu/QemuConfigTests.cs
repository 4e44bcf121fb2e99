using Falk.Core.Backends.Qemu;
using Falk.Core.Processes;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Backends.Qemu;

/// <summary>The qemu template's keys, and the command line Falk makes of them. No guest runs here.</summary>
public sealed class QemuConfigTests
{
    private const string Command = "qemu-system-x86_64 -machine q35 -m 256 -drive file={IMAGENAME},if=virtio -netdev user,id=n0,hostfwd=tcp:127.0.0.1:{SSHPORT}-:22";

    [Theory(Timeout = 60_000)]
    [InlineData("-qmp unix:/tmp/q.sock,server=on,wait=off", "qmp")]
    [InlineData("-serial stdio", "serial")]
    [InlineData("-monitor stdio", "monitor")]
    [InlineData("-pidfile /tmp/q.pid", "pidfile")]
    [InlineData("--name other", "name")]
    [InlineData("-daemonize", "daemonize")]
    [InlineData("-sandbox off", "sandbox")]
    public async Task A_command_that_sets_what_Falk_controls_the_machine_by_is_a_one_line_error_at_start(string option, string name)
    {
        var ct = TestContext.Current.CancellationToken;
        using var dir = new TempDirectory();
        var config = dir.File("falk.conf");
        await File.WriteAllTextAsync(config, $"""
            [falk]
            control_socket = {dir.File("falk.sock")}
            [vm]
            type = qemu
            base_image = /srv/vm.qcow2
            command = {Command} {option}
            ssh_user = chantal
            """, ct);

        var (code, _, stderr) = await FalkDaemon.RunToEndAsync(["--config", config], ct);

        code.Should().Be(1);
        stderr.Trim().Split('\n').Should().ContainSingle().Which.Should()
            .StartWith($"falkd: error: {config}: [vm] command: sets -{name}, which Falk sets itself");
        File.Exists(dir.File("falk.sock")).Should().BeFalse();
    }

    [Fact(Timeout = 60_000)]
    public async Task Missing_keys_a_command_without_the_image_unknown_placeholders_and_a_comma_in_overlay_image_are_reported_by_key()
    {
        var ct = TestContext.Current.CancellationToken;
        using var dir = new TempDirectory();
        var config = dir.File("falk.conf");
        await File.WriteAllTextAsync(config, $"""
            [falk]
            control_socket = {dir.File("falk.sock")}
            [no-base]
            type = qemu
            command = {Command}
            ssh_user = chantal
            [no-image]
            type = qemu
            base_image = /srv/vm.qcow2
            command = qemu-system-x86_64 -m 256
            ssh_user = chantal
            [odd-placeholder]
            type = qemu
            base_image = /srv/vm.qcow2
            command = {Command} -smp {"{CPUS}"}
            ssh_user = chantal
            [comma]
            type = qemu
            base_image = /srv/vm.qcow2
            overlay_image = /tmp/a,b
            command = {Command}
            ssh_user = chantal
            """, ct);

        var (code, _, stderr) = await FalkDaemon.RunToEndAsync(["--config", config, "--check-config"], ct);

        code.Should().Be(1);
        stderr.Trim().Split('\n').Should().BeEquivalentTo(
            $"falkd: error: {config}: [no-base] base_image: is required",
            $"falkd: error: {config}: [no-image] command: has no {{IMAGENAME}}: the machine's disk (its overlay) would not be used",
            $"falkd: error: {config}: [odd-placeholder] command: unknown placeholder {{CPUS}} (only {{IMAGENAME}} and {{SSHPORT}} are substituted)",
            $"falkd: error: {config}: [comma] overlay_image: '/tmp/a,b' contains a comma, which QEMU's option syntax would split; use a path without one");
    }

    [Fact]
    public void Falk_appends_its_QMP_socket_serial_console_pid_file_name_and_sandbox_and_doubles_commas_inside_option_values()
    {
        var options = new QemuTemplateOptions("/srv/base.qcow2", null,
            ["qemu-system-x86_64", "-drive", "file={IMAGENAME},if=virtio", "-hda", "{IMAGENAME}", "-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:{SSHPORT}-:22"]);
        var paths = new QemuMachinePaths("/var/lib/falk,x/m1", "/var/lib/falk,x/m1/console.log");

        var args = QemuCommandLine.Build(options, "m1", "/var/lib/falk,x/m1/overlay.qcow2", 7890, paths);

        args.Should().Equal(
            "qemu-system-x86_64",
            "-drive", "file=/var/lib/falk,,x/m1/overlay.qcow2,if=virtio",
            "-hda", "/var/lib/falk,x/m1/overlay.qcow2",
            "-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:7890-:22",
            "-name", "falk-m1",
            "-chardev", "socket,id=falk-qmp,path=/var/lib/falk,,x/m1/qemu/qmp.sock,server=on,wait=off",
            "-mon", "chardev=falk-qmp,mode=control",
            "-chardev", "socket,id=falk-serial,path=/var/lib/falk,,x/m1/qemu/console.sock,server=on,wait=on",
            "-serial", "chardev:falk-serial",
            "-pidfile", "/var/lib/falk,x/m1/qemu/qemu.pid",
            "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");
    }

    [Fact(Timeout = 60_000)]
    public async Task With_overlay_image_the_overlays_are_named_by_the_prefix_and_the_machine_id_and_delete_removes_them()
    {
        var ct = TestContext.Current.CancellationToken;
        using var dir = new TempDirectory();
        var baseImage = dir.File("base.qcow2");
        await new ProcessRunner().RunAsync(new ProcessSpec(["qemu-img", "create", "-q", "-f", "qcow2", baseImage, "64M"]), TimeSpan.FromSeconds(30), ct);
        var daemon = await FalkDaemon.StartAsync($"""
            [vm]
            type = qemu
            base_image = {baseImage}
            overlay_image = {dir.File("run")}
            command = {Command}
            ssh_user = chantal
            """, ct);
        await using (daemon)
        {
            var first = (await daemon.Client.CreateAsync("vm", ct))["id"]!.GetValue<string>();
            var second = (await daemon.Client.CreateAsync("vm", ct))["id"]!.GetValue<string>();

            File.Exists(dir.File($"run-{first}.qcow2")).Should().BeTrue();
            File.Exists(dir.File($"run-{second}.qcow2")).Should().BeTrue();

            await daemon.Client.DeleteMachineAsync(first, ct);
            await daemon.Client.DeleteMachineAsync(second, ct);
            System.IO.Directory.GetFiles(dir.Path, "run-*").Should().BeEmpty();
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task A_missing_base_image_fails_the_create_with_502_naming_the_file_and_leaves_nothing()
    {
        var ct = TestContext.Current.CancellationToken;
        using var dir = new TempDirectory();
        var daemon = await FalkDaemon.StartAsync($"""
            [vm]
            type = qemu
            base_image = {dir.File("missing.qcow2")}
            command = {Command}
            ssh_user = chantal
            """, ct);
        await using (daemon)
        {
            using var response = await daemon.Client.PostJsonAsync("v1/machines", new { template = "vm" }, ct);

            (await response.ShouldBeProblemAsync(System.Net.HttpStatusCode.BadGateway, "backend-failed", ct))["detail"]!.GetValue<string>()
                .Should().Contain(dir.File("missing.qcow2"));
            (await daemon.Client.ListAsync(ct)).Should().BeEmpty();
            System.IO.Directory.GetFileSystemEntries(Path.Combine(daemon.Directory.Path, "state", "machines")).Should().BeEmpty();
        }
    }
}
