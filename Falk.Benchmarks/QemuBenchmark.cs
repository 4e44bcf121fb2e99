using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Falk.Client;
using Falk.Core.Processes;
using Falk.Core.Ssh;
using Falk.Tests.Fixtures;

namespace Falk.Benchmarks;

/// <summary>
/// The QEMU test guest (images/qemu/build-guest.sh) booted to SSH through Falk (create + boot?wait=ssh) against the
/// same guest started by hand with the same command line (qemu-img create, qemu-system-x86_64) and polled with the same
/// SSH probe, interleaved; then overlay creation for the guest's 64 MiB disk and for a 4 GiB base holding 1 GiB of data
/// (written with qemu-io, so its qcow2 has allocated clusters and a filled L1/L2 table), through Falk and by hand.
/// With <c>resume</c>: cold boots against resumes (<c>boot = resume</c>) of the same guest through Falk, interleaved.
/// Usage: falk-bench qemu [runs=5] [accel=tcg] · falk-bench qemu resume [runs=10] [accel=tcg]
/// </summary>
public static class QemuBenchmark
{
    private const string Append = "console=ttyS0 root=/dev/vda rw panic=-1 quiet cryptomgr.notests mitigations=off tsc=reliable no_timer_check";

    public static async Task<int> RunAsync(string[] args, CancellationToken cancellationToken)
    {
        var resume = args is ["resume", ..];
        args = resume ? args[1..] : args;
        var runs = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : resume ? 10 : 5;
        var accel = args.Length > 1 ? args[1] : "tcg";
        var runner = new ProcessRunner();
        var guest = await BuildGuestAsync(runner, cancellationToken);
        var work = WorkFolder.Create();
        try
        {
            var key = HostKey.TryParse(await File.ReadAllTextAsync(Path.Combine(guest, "ssh_host_ed25519_key.pub"), cancellationToken), out _)!;
            var small = Path.Combine(guest, "base.qcow2");
            var big = Path.Combine(work, "big.qcow2");
            await runner.RunAsync(new ProcessSpec(["qemu-img", "create", "-q", "-f", "qcow2", big, "4G"]), TimeSpan.FromSeconds(60), cancellationToken);
            await runner.RunAsync(new ProcessSpec(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 1G", big]), TimeSpan.FromMinutes(5), cancellationToken);
            var bigFile = new FileInfo(big).Length;

            var socket = Path.Combine(work, "falk.sock");
            var config = Path.Combine(work, "falk.conf");
            await File.WriteAllTextAsync(config, $"""
                [falk]
                control_socket = {socket}
                state_dir = {Path.Combine(work, "state")}
                vm_ports = [27700,27749]
                [guest]
                type = qemu
                base_image = {small}
                command = {Command(guest, accel, "{IMAGENAME}", "{SSHPORT}")}
                ssh_user = chantal
                ssh_host = 127.0.0.1
                ssh_known_host_key_file = {Path.Combine(guest, "ssh_host_ed25519_key.pub")}
                [big]
                type = qemu
                base_image = {big}
                command = {Command(guest, accel, "{IMAGENAME}", "{SSHPORT}")}
                ssh_user = chantal
                [resumed]
                type = qemu
                boot = resume
                base_image = {small}
                command = {Command(guest, accel, "{IMAGENAME}", "{SSHPORT}")}
                ssh_user = chantal
                ssh_host = 127.0.0.1
                ssh_known_host_key_file = {Path.Combine(guest, "ssh_host_ed25519_key.pub")}
                """, cancellationToken);

            using var client = FalkHttp.CreateClient(socket, TimeSpan.FromMinutes(5));
            var daemon = await LocalFalkd.StartAsync(config, client, null, cancellationToken);
            await using (daemon)
            {
                if (resume)
                {
                    await CompareResumeAsync(client, runs, accel, cancellationToken);
                    return 0;
                }

                var readiness = new SshReadiness(new SshNetProbe(), TimeProvider.System);
                var viaFalk = new List<double>();
                var byHand = new List<double>();
                for (var i = 0; i < runs + 1; i++)
                {
                    var falk = await BootThroughFalkAsync(client, cancellationToken);
                    var hand = await BootByHandAsync(runner, readiness, guest, accel, small, key, work, 27750 + i, cancellationToken);
                    if (i >= 1)
                    {
                        // The first run warms up the JIT, the page cache and QEMU's own files on both sides.
                        viaFalk.Add(falk);
                        byHand.Add(hand);
                    }
                }

                var overlayRuns = Math.Max(10, runs * 2);
                var falkSmall = new List<double>();
                var falkBig = new List<double>();
                var handSmall = new List<double>();
                var handBig = new List<double>();
                for (var i = 0; i < overlayRuns + 1; i++)
                {
                    var fs = await CreateThroughFalkAsync(client, "guest", cancellationToken);
                    var fb = await CreateThroughFalkAsync(client, "big", cancellationToken);
                    var hs = await CreateByHandAsync(runner, small, work, cancellationToken);
                    var hb = await CreateByHandAsync(runner, big, work, cancellationToken);
                    if (i >= 1)
                    {
                        falkSmall.Add(fs);
                        falkBig.Add(fb);
                        handSmall.Add(hs);
                        handBig.Add(hb);
                    }
                }

                Console.WriteLine($"falk-bench qemu {runs} {accel}: test guest under {accel}, {runs} interleaved runs after 1 warm-up run, {Environment.ProcessorCount} cores, load average {ProcessFigures.LoadAverage()}");
                Console.WriteLine(Stats.Describe("through Falk: create+boot?wait=ssh", viaFalk));
                Console.WriteLine(Stats.Describe("by hand: qemu-img+qemu+same probe", byHand));
                Console.WriteLine($"{"Falk's overhead (difference of medians)",-40} {Stats.Median(viaFalk) - Stats.Median(byHand):0.0} ms");
                Console.WriteLine();
                Console.WriteLine($"overlay creation, {overlayRuns} interleaved runs after 1 warm-up run (64 MiB guest disk vs a 4 GiB qcow2 holding 1 GiB of data, {bigFile / 1048576.0:0} MiB on disk); load average {ProcessFigures.LoadAverage()}");
                Console.WriteLine(Stats.Describe("through Falk: POST /v1/machines, 64 MiB", falkSmall));
                Console.WriteLine(Stats.Describe("through Falk: POST /v1/machines, 4 GiB", falkBig));
                Console.WriteLine(Stats.Describe("by hand: qemu-img create, 64 MiB", handSmall));
                Console.WriteLine(Stats.Describe("by hand: qemu-img create, 4 GiB", handBig));
                Console.WriteLine($"{"ratio 4 GiB / 64 MiB through Falk",-40} {Stats.Median(falkBig) / Stats.Median(falkSmall):0.00}");
                Console.WriteLine($"{"ratio 4 GiB / 64 MiB by hand",-40} {Stats.Median(handBig) / Stats.Median(handSmall):0.00}");
            }

            return 0;
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    private static string Command(string guest, string accel, string image, string port) =>
        $"qemu-system-x86_64 -machine q35 -accel {accel} -cpu qemu64 -smp 1 -m 256 -nodefaults -no-user-config -display none -no-reboot " +
        $"-kernel {Path.Combine(guest, "vmlinuz")} -initrd {Path.Combine(guest, "initrd.img")} -append '{Append}' " +
        $"-drive file={image},if=virtio,format=qcow2,cache=writeback,discard=unmap " +
        $"-netdev user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22 -device virtio-net-pci,netdev=n0 -device virtio-rng-pci";

    private static async Task<string> BuildGuestAsync(ProcessRunner runner, CancellationToken cancellationToken)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var script = Path.Combine(dir.FullName, "images", "qemu", "build-guest.sh");
            if (File.Exists(script))
            {
                await runner.RunAsync(new ProcessSpec(["bash", script]), TimeSpan.FromMinutes(15), cancellationToken);
                break;
            }
        }

        return Path.Combine(Environment.GetEnvironmentVariable("FALK_IMAGE_DIR") is { Length: > 0 } d ? d : "/var/cache/falk-test-images", "qemu");
    }

    /// <summary>Cold boots and resumes of the same guest, each create+boot?wait=ssh through Falk, interleaved.</summary>
    private static async Task CompareResumeAsync(HttpClient client, int runs, string accel, CancellationToken cancellationToken)
    {
        var cold = new List<double>();
        var resumed = new List<double>();
        for (var i = 0; i < runs + 1; i++)
        {
            // The first resume also waits for the guest Falk saves at start: the warm-up run, not counted.
            var r = await BootThroughFalkAsync(client, cancellationToken, "resumed");
            var c = await BootThroughFalkAsync(client, cancellationToken);
            if (i >= 1)
            {
                cold.Add(c);
                resumed.Add(r);
            }
        }

        Console.WriteLine($"qemu resume, test guest under {accel}, {runs} interleaved runs after 1 warm-up run (create+boot?wait=ssh through Falk)");
        Console.WriteLine(Stats.Describe("cold boot (boot = cold)", cold));
        Console.WriteLine(Stats.Describe("resumed (boot = resume)", resumed));
        Console.WriteLine($"{"ratio cold / resumed (medians)",-40} {Stats.Median(cold) / Stats.Median(resumed):0.0}");
    }

    private static async Task<double> BootThroughFalkAsync(HttpClient client, CancellationToken cancellationToken, string template = "guest")
    {
        var watch = Stopwatch.StartNew();
        var id = await CreateAsync(client, template, cancellationToken);
        using (var booted = await client.PostAsync($"v1/machines/{id}/boot?wait=ssh&timeout=120", null, cancellationToken))
        {
            await booted.EnsureSuccessAsync(cancellationToken);
        }

        var elapsed = watch.Elapsed.TotalMilliseconds;
        using var deleted = await client.DeleteAsync($"v1/machines/{id}", cancellationToken);
        await deleted.EnsureSuccessAsync(cancellationToken);
        return elapsed;
    }

    private static async Task<double> BootByHandAsync(ProcessRunner runner, SshReadiness readiness, string guest, string accel, string baseImage, HostKey key, string work, int port, CancellationToken cancellationToken)
    {
        var run = Directory.CreateDirectory(Path.Combine(work, "hand-" + port.ToString(CultureInfo.InvariantCulture))).FullName;
        var overlay = Path.Combine(run, "overlay.qcow2");
        var watch = Stopwatch.StartNew();
        await runner.RunAsync(new ProcessSpec(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", baseImage, overlay]), TimeSpan.FromSeconds(60), cancellationToken);
        var command = CommandLine.Split(Command(guest, accel, overlay, port.ToString(CultureInfo.InvariantCulture))).ToList();
        command.AddRange(["-serial", "file:" + Path.Combine(run, "console.log"), "-qmp", $"unix:{Path.Combine(run, "qmp.sock")},server=on,wait=off"]);
        var qemu = runner.Start(new ProcessSpec(command) { OwnProcessGroup = true });
        double elapsed;
        await using (qemu)
        {
            await readiness.WaitAsync(new SshEndpoint("127.0.0.1", port, "chantal"), [key], TimeSpan.FromSeconds(120), qemu.Exited, () => { }, cancellationToken);
            elapsed = watch.Elapsed.TotalMilliseconds;
            await qemu.KillAsync(cancellationToken);
        }

        Directory.Delete(run, recursive: true);
        return elapsed;
    }

    private static async Task<double> CreateThroughFalkAsync(HttpClient client, string template, CancellationToken cancellationToken)
    {
        var watch = Stopwatch.StartNew();
        var id = await CreateAsync(client, template, cancellationToken);
        var elapsed = watch.Elapsed.TotalMilliseconds;
        using var deleted = await client.DeleteAsync($"v1/machines/{id}", cancellationToken);
        await deleted.EnsureSuccessAsync(cancellationToken);
        return elapsed;
    }

    private static async Task<double> CreateByHandAsync(ProcessRunner runner, string baseImage, string work, CancellationToken cancellationToken)
    {
        var overlay = Path.Combine(work, "overlay-by-hand.qcow2");
        var watch = Stopwatch.StartNew();
        await runner.RunAsync(new ProcessSpec(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", baseImage, overlay]), TimeSpan.FromSeconds(60), cancellationToken);
        var elapsed = watch.Elapsed.TotalMilliseconds;
        File.Delete(overlay);
        return elapsed;
    }

    private static async Task<string> CreateAsync(HttpClient client, string template, CancellationToken cancellationToken)
    {
        using var created = await client.PostAsJsonAsync("v1/machines", new { template }, cancellationToken);
        await created.EnsureSuccessAsync(cancellationToken);
        return JsonNode.Parse(await created.Content.ReadAsStringAsync(cancellationToken))!["id"]!.GetValue<string>();
    }
}
