using System.Net;
using System.Text.Json.Nodes;
using Falk.Core.Processes;
using Falk.Core.Waiting;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Hardening;

/// <summary>
/// Issue 13 item 3 on the real daemon: a machine whose folder cannot be removed when its lease runs out stays failed
/// and keeps its port and slot; the reaper goes on enforcing other leases, and a later delete succeeds.
/// </summary>
public sealed class FailedDeleteTests
{
    private const string Template = """
        [sleeper]
        type = custom
        launch = /bin/sleep 1000
        ssh_user = nobody
        """;

    [Fact(Timeout = 120_000)]
    public async Task A_machine_whose_folder_cannot_be_removed_stays_failed_with_its_port_and_the_reaper_goes_on()
    {
        var ct = TestContext.Current.CancellationToken;
        var runner = new ProcessRunner();
        var daemon = await FalkDaemon.StartAsync(Template, ct, ports: 2);
        await using (daemon)
        {
            var stuck = await CreateAsync(daemon, leaseSeconds: 3, ct);
            var stuckId = stuck["id"]!.GetValue<string>();
            var stuckPort = stuck["ssh"]!["port"]!.GetValue<int>();
            var pinned = Path.Combine(daemon.Directory.File("state"), "machines", stuckId, "pinned");
            await File.WriteAllTextAsync(pinned, "root cannot remove an immutable file", ct);
            await runner.RunAsync(new(["chattr", "+i", pinned]), TimeSpan.FromSeconds(10), ct);
            try
            {
                // The lease runs out: the delete fails, the machine stays, failed, saying why.
                await Wait.UntilAsync(
                    async token => await daemon.Client.StateAsync(stuckId, token) is "failed" ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>("not failed yet"),
                    TimeSpan.FromMilliseconds(200), TimeSpan.FromSeconds(30), "the expired machine to be failed", ct);
                var view = JsonNode.Parse(await daemon.Client.GetStringAsync($"v1/machines/{stuckId}", ct))!;
                view["last_error"]!.GetValue<string>().Should().Contain("cleanup failed");
                view["ssh"]!["port"]!.GetValue<int>().Should().Be(stuckPort);

                // The reaper goes on: another machine's lease is still enforced.
                var other = (await CreateAsync(daemon, leaseSeconds: 2, ct))["id"]!.GetValue<string>();
                await Wait.UntilAsync(
                    async token =>
                    {
                        using var response = await daemon.Client.GetAsync($"v1/machines/{other}", token);
                        return response.StatusCode == HttpStatusCode.NotFound ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>($"still {response.StatusCode}");
                    },
                    TimeSpan.FromMilliseconds(200), TimeSpan.FromSeconds(30), "the other machine's lease to be enforced", ct);

                // The failed machine still holds its port: of two ports, one is left.
                var next = await CreateAsync(daemon, leaseSeconds: 600, ct);
                next["ssh"]!["port"]!.GetValue<int>().Should().NotBe(stuckPort);
                using (var full = await daemon.Client.PostJsonAsync("v1/machines", new { template = "sleeper" }, ct))
                {
                    await full.ShouldBeProblemAsync(HttpStatusCode.ServiceUnavailable, "capacity-exhausted", ct);
                }

                (await daemon.Client.StateAsync(stuckId, ct)).Should().Be("failed");
            }
            finally
            {
                await runner.RunAsync(new(["chattr", "-i", pinned]), TimeSpan.FromSeconds(10), CancellationToken.None);
            }

            // Once the folder can go, a delete succeeds and gives the port back.
            await daemon.Client.DeleteMachineAsync(stuckId, ct);
            Directory.Exists(Path.GetDirectoryName(pinned)).Should().BeFalse();
            var reused = await CreateAsync(daemon, leaseSeconds: 600, ct);
            reused["ssh"]!["port"]!.GetValue<int>().Should().Be(stuckPort);
            daemon.Process!.HasExited.Should().BeFalse();
        }
    }

    private static async Task<JsonNode> CreateAsync(FalkDaemon daemon, int leaseSeconds, CancellationToken ct)
    {
        using var response = await daemon.Client.PostJsonAsync("v1/machines", new { template = "sleeper", lease_seconds = leaseSeconds }, ct);
        var body = await response.JsonAsync(ct);
        response.StatusCode.Should().Be(HttpStatusCode.Created, body.ToJsonString());
        return body;
    }
}
