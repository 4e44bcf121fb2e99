using System.Net;
using System.Text.Json.Nodes;
using Falk.Core.Processes;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Hardening;

/// <summary>
/// Issue 13 item 5 on the real daemon: with its <c>state_dir</c> on a real, small filesystem (a 2 MiB tmpfs) filled
/// up, requests that must write answer 507 problem+json (<c>storage-full</c>), nothing changes, and the daemon
/// keeps serving; once there is room again, it works as before.
/// </summary>
public sealed class FullDiskTests
{
    private const string Template = """
        [sleeper]
        type = custom
        launch = /bin/sleep 1000
        ssh_user = nobody
        """;

    [Fact(Timeout = 120_000)]
    public async Task A_full_state_dir_disk_answers_507_changes_nothing_and_the_daemon_keeps_serving()
    {
        Assert.SkipUnless(Environment.UserName == "root", "needs root to mount a tmpfs");
        var ct = TestContext.Current.CancellationToken;
        var runner = new ProcessRunner();
        var daemon = await FalkDaemon.StartAsync(Template, ct, ports: 4);
        await using (daemon)
        {
            var state = daemon.Directory.File("state");
            await daemon.StopAsync(ct);
            foreach (var entry in Directory.EnumerateFileSystemEntries(state))
            {
                if (Directory.Exists(entry)) Directory.Delete(entry, recursive: true); else File.Delete(entry);
            }

            await runner.RunAsync(new(["mount", "-t", "tmpfs", "-o", "size=2m,mode=700", "falk-test-full", state]), TimeSpan.FromSeconds(10), ct);
            try
            {
                await daemon.StartProcessAsync(ct);
                var kept = await daemon.Client.CreateAsync("sleeper", ct);
                var keptId = kept["id"]!.GetValue<string>();
                var lease = kept["lease_expires_at"]!.GetValue<string>();
                var filler = Path.Combine(state, "filler");
                Fill(filler);

                using (var create = await daemon.Client.PostJsonAsync("v1/machines", new { template = "sleeper" }, ct))
                {
                    (await create.ShouldBeProblemAsync(HttpStatusCode.InsufficientStorage, "storage-full", ct))["detail"]!.GetValue<string>()
                        .Should().Contain("full");
                }

                using (var renew = await daemon.Client.PutAsync($"v1/machines/{keptId}/lease",
                    new StringContent("""{"seconds":1200}""", System.Text.Encoding.UTF8, "application/json"), ct))
                {
                    await renew.ShouldBeProblemAsync(HttpStatusCode.InsufficientStorage, "storage-full", ct);
                }

                using (var boot = await daemon.Client.PostAsync($"v1/machines/{keptId}/boot", null, ct))
                {
                    await boot.ShouldBeProblemAsync(HttpStatusCode.InsufficientStorage, "storage-full", ct);
                }

                // Nothing changed, and the daemon still answers.
                var list = await daemon.Client.ListAsync(ct);
                list.Should().ContainSingle();
                list[0]!["id"]!.GetValue<string>().Should().Be(keptId);
                list[0]!["state"]!.GetValue<string>().Should().Be("prepared");
                list[0]!["lease_expires_at"]!.GetValue<string>().Should().Be(lease);
                Directory.GetDirectories(Path.Combine(state, "machines")).Should().ContainSingle();
                (await daemon.Client.GetAsync("healthz", ct)).StatusCode.Should().Be(HttpStatusCode.OK);
                daemon.Process!.HasExited.Should().BeFalse();

                // With room again, the same requests succeed.
                File.Delete(filler);
                var made = await daemon.Client.CreateAsync("sleeper", ct);
                await daemon.Client.BootAsync(keptId, ct, query: string.Empty);
                (await daemon.Client.ListAsync(ct)).Should().HaveCount(2);
                await daemon.Client.DeleteMachineAsync(made["id"]!.GetValue<string>(), ct);
                await daemon.Client.DeleteMachineAsync(keptId, ct);
            }
            finally
            {
                await daemon.StopAsync(CancellationToken.None);
                await runner.RunAsync(new(["umount", state]), TimeSpan.FromSeconds(10), CancellationToken.None);
            }
        }
    }

    /// <summary>Writes <paramref name="path"/> until the filesystem has no room left.</summary>
    private static void Fill(string path)
    {
        var chunk = new byte[4096];
        using var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 1);
        try
        {
            while (true)
            {
                file.Write(chunk);
            }
        }
        catch (IOException)
        {
            // Full.
        }
    }
}
