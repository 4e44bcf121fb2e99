using Falk.Core.Backends.Qemu;
using System.Globalization;
using System.Text.Json.Nodes;
using Falk.Core.Processes;
using Falk.Core.Ssh;
using Falk.Tests.Fixtures;
using Renci.SshNet;

namespace Falk.Tests.Backends.Qemu;

/// <summary>
/// The small test guest of <c>images/qemu/build-guest.sh</c> (built once, cached), and how the tests run it: under the
/// accelerator of <c>FALK_TEST_QEMU_ACCEL</c> (default <c>tcg</c>, since KVM hangs on some development machines).
/// </summary>
public sealed class QemuGuest
{
    private static readonly SemaphoreSlim BuildLock = new(1, 1);
    private static QemuGuest? _built;

    private QemuGuest(string directory, HostKey hostKey)
    {
        Directory = directory;
        HostKey = hostKey;
    }

    /// <summary>TCG is slow: generous limits for a boot to SSH and for a guest's shutdown.</summary>
    public static readonly TimeSpan BootTimeout = TimeSpan.FromSeconds(120);

    public static string Accelerator => Environment.GetEnvironmentVariable("FALK_TEST_QEMU_ACCEL") is { Length: > 0 } accel ? accel : "tcg";

    public string Directory { get; }

    public HostKey HostKey { get; }

    public string BaseImage => Path.Combine(Directory, "base.qcow2");

    public string ClientKey => Path.Combine(Directory, "id_ed25519");

    public string HostKeyFile => Path.Combine(Directory, "ssh_host_ed25519_key.pub");

    /// <summary>The template's command: the build script's argument list, with Falk's placeholders.</summary>
    public string Command(string append = "console=ttyS0 root=/dev/vda rw panic=-1 quiet cryptomgr.notests mitigations=off tsc=reliable no_timer_check") =>
        $"qemu-system-x86_64 -machine q35 -accel {Accelerator} -cpu qemu64 -smp 1 -m 256 -nodefaults -no-user-config -display none -no-reboot " +
        $"-kernel {Path.Combine(Directory, "vmlinuz")} -initrd {Path.Combine(Directory, "initrd.img")} -append '{append}' " +
        "-drive file={IMAGENAME},if=virtio,format=qcow2,cache=writeback,discard=unmap " +
        "-netdev user,id=n0,hostfwd=tcp:127.0.0.1:{SSHPORT}-:22 -device virtio-net-pci,netdev=n0 -device virtio-rng-pci";

    /// <summary>A template section for this guest on <paramref name="baseImage"/>.</summary>
    public string Template(string name, string baseImage, string? command = null, string extra = "") => $"""
        [{name}]
        type = qemu
        base_image = {baseImage}
        command = {command ?? Command()}
        ssh_user = chantal
        ssh_host = 127.0.0.1
        ssh_known_host_key_file = {HostKeyFile}
        {extra}

        """;

    /// <summary>Runs the build script (a no-op when its cache is current) once per test run.</summary>
    public static async Task<QemuGuest> BuildAsync(CancellationToken cancellationToken)
    {
        await BuildLock.WaitAsync(cancellationToken);
        try
        {
            if (_built is null)
            {
                var script = Path.Combine(RepositoryPaths.Root, "images", "qemu", "build-guest.sh");
                await new ProcessRunner().RunAsync(new ProcessSpec(["bash", script]), TimeSpan.FromMinutes(15), cancellationToken);
                var directory = Path.Combine(Environment.GetEnvironmentVariable("FALK_IMAGE_DIR") is { Length: > 0 } d ? d : "/var/cache/falk-test-images", "qemu");
                var hostKey = HostKey.TryParse(await File.ReadAllTextAsync(Path.Combine(directory, "ssh_host_ed25519_key.pub"), cancellationToken), out var problem)
                    ?? throw new InvalidOperationException("the guest's host key is unreadable: " + problem);
                _built = new QemuGuest(directory, hostKey);
            }

            return _built;
        }
        finally
        {
            BuildLock.Release();
        }
    }

    /// <summary>Logs in with the guest's key, checking its pinned host key, and runs <paramref name="command"/>; returns stdout.</summary>
    public async Task<string> SshAsync(int port, string user, string command, CancellationToken cancellationToken)
    {
        using var key = new PrivateKeyFile(ClientKey);
        var info = new ConnectionInfo("127.0.0.1", port, user, new PrivateKeyAuthenticationMethod(user, key)) { Timeout = TimeSpan.FromSeconds(20) };
        using var client = new SshClient(info);
        var presented = string.Empty;
        client.HostKeyReceived += (_, e) =>
        {
            presented = e.FingerPrintSHA256;
            e.CanTrust = Fingerprint(e.HostKey) == HostKey.FingerprintSha256;
        };
        await client.ConnectAsync(cancellationToken);
        using var run = client.CreateCommand(command);
        await run.ExecuteAsync(cancellationToken);
        run.ExitStatus.Should().Be(0, $"`{command}` as {user} on port {port.ToString(CultureInfo.InvariantCulture)} (host key {presented}) wrote: {run.Error}");
        return run.Result;
    }

    private static string Fingerprint(byte[] blob) =>
        "SHA256:" + Convert.ToBase64String(System.Security.Cryptography.SHA256.HashData(blob)).TrimEnd('=');

    /// <summary>Runs a command that ends the connection (poweroff): only that it was started matters.</summary>
    public async Task SshFireAndForgetAsync(int port, string user, string command, CancellationToken cancellationToken)
    {
        using var key = new PrivateKeyFile(ClientKey);
        var info = new ConnectionInfo("127.0.0.1", port, user, new PrivateKeyAuthenticationMethod(user, key)) { Timeout = TimeSpan.FromSeconds(20) };
        using var client = new SshClient(info);
        client.HostKeyReceived += (_, e) => e.CanTrust = Fingerprint(e.HostKey) == HostKey.FingerprintSha256;
        await client.ConnectAsync(cancellationToken);
        using var run = client.CreateCommand(command);
        try
        {
            await run.ExecuteAsync(cancellationToken).WaitAsync(TimeSpan.FromSeconds(10), cancellationToken);
        }
        catch (Exception e) when (e is Renci.SshNet.Common.SshException or TimeoutException or System.Net.Sockets.SocketException)
        {
            // The guest went away under the session, as it should.
        }
    }
}

/// <summary>
/// One falkd per test class on a copy of the guest's base image in a temporary folder (commits change the copy, never
/// the shared cache). Every QEMU test class is in the <c>qemu</c> collection: one class at a time, so at most two
/// guests run at once on a two-core machine.
/// </summary>
public sealed class QemuDaemonFixture : IAsyncLifetime
{
    public QemuGuest Guest { get; private set; } = null!;

    public TempDirectory Work { get; } = new();

    public FalkDaemon Daemon { get; private set; } = null!;

    public HttpClient Client => Daemon.Client;

    public string BaseImage => Work.File("base.qcow2");

    /// <summary>
    /// A second QMP monitor of the <c>monitored</c> template's QEMU: someone other than Falk at the controls. In a folder
    /// of QEMU's user, who makes the socket.
    /// </summary>
    public string OutsideMonitor => Path.Combine(Work.File("qemu-user"), "outside.qmp");

    public string StateDirectory => Path.Combine(Daemon.Directory.Path, "state");

    public async ValueTask InitializeAsync()
    {
        var ct = TestContext.Current.CancellationToken;
        Guest = await QemuGuest.BuildAsync(ct);
        File.Copy(Guest.BaseImage, BaseImage);
        Directory.CreateDirectory(Path.GetDirectoryName(OutsideMonitor)!);
        await new ProcessRunner().RunAsync(new ProcessSpec(["chown", QemuDaemonOptions.DefaultUser + ":", Path.GetDirectoryName(OutsideMonitor)!]), TimeSpan.FromSeconds(10), ct);
        Daemon = await FalkDaemon.StartAsync(
            Guest.Template("guest", BaseImage) +
            Guest.Template("monitored", BaseImage, Guest.Command() + $" -chardev socket,id=outside,path={OutsideMonitor},server=on,wait=off -mon chardev=outside,mode=control") +
            Guest.Template("panics", BaseImage, Guest.Command("console=ttyS0 root=/dev/vdz rw panic=-1 quiet")),
            ct);
    }

    public async ValueTask DisposeAsync()
    {
        if (Daemon is not null)
        {
            await Daemon.DisposeAsync();
        }

        Work.Dispose();
    }
}

/// <summary>
/// QEMU tests run one class at a time and apart from the rest of the suite: a TCG guest keeps a core busy, and other
/// tests' timing-sensitive checks (a killed process gone at once) should not compete with it on a two-core machine.
/// </summary>
[CollectionDefinition("qemu", DisableParallelization = true)]
public sealed class QemuTestGroup;

internal static class JsonHttp
{
    public static async Task<JsonNode> GetFromJsonNodeAsync(this HttpClient client, string path, CancellationToken cancellationToken)
    {
        using var response = await client.GetAsync(path, cancellationToken);
        response.StatusCode.Should().Be(System.Net.HttpStatusCode.OK);
        return await response.JsonAsync(cancellationToken);
    }
}
