using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text;
using Falk.Core.Waiting;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Hardening;

/// <summary>
/// Issue 13 item 4 on the real daemon over its real socket: a create whose client went away before the answer is
/// the machine a retry with the same Idempotency-Key gets, and one slow delete holds up no other lease's expiry.
/// </summary>
public sealed class RetryPromiseTests
{
    [Fact(Timeout = 60_000)]
    public async Task A_create_whose_client_went_away_is_the_machine_a_retry_with_the_same_key_gets()
    {
        var ct = TestContext.Current.CancellationToken;
        using var marks = new TempDirectory();
        var prepared = marks.File("prepare-began");
        var daemon = await FalkDaemon.StartAsync($"""
            [slow-prepare]
            type = custom
            prepare = /bin/sh -c 'touch "$0"; sleep 3' {prepared}
            launch = /bin/sleep 1000
            ssh_user = nobody
            """, ct);
        await using (daemon)
        {
            // The first client sends its create and hangs up while the machine is being prepared.
            using (var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
            {
                await socket.ConnectAsync(new UnixDomainSocketEndPoint(daemon.SocketPath), ct);
                const string Body = """{"template":"slow-prepare"}""";
                var request = "POST /v1/machines HTTP/1.1\r\nHost: falk\r\nContent-Type: application/json\r\n"
                    + $"Idempotency-Key: job-7\r\nContent-Length: {Encoding.UTF8.GetByteCount(Body)}\r\n\r\n{Body}";
                await socket.SendAsync(Encoding.UTF8.GetBytes(request), SocketFlags.None, ct);
                await Wait.UntilAsync(
                    _ => Task.FromResult(File.Exists(prepared) ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>("prepare has not begun")),
                    TimeSpan.FromMilliseconds(50), TimeSpan.FromSeconds(20), "the first create's prepare to begin", ct);
            }

            // The retry, with the same key, gets the machine the first create made, and there is no other.
            using var retry = new HttpRequestMessage(HttpMethod.Post, "v1/machines") { Content = JsonContent.Create(new { template = "slow-prepare" }) };
            retry.Headers.Add("Idempotency-Key", "job-7");
            using var answer = await daemon.Client.SendAsync(retry, ct);
            var body = await answer.JsonAsync(ct);
            answer.StatusCode.Should().Be(HttpStatusCode.Created, body.ToJsonString());
            var id = body["id"]!.GetValue<string>();
            var listed = await daemon.Client.ListAsync(ct);
            listed.Select(m => m!["id"]!.GetValue<string>()).Should().Equal([id], "exactly one machine exists, and the retry got it");
            Directory.GetDirectories(Path.Combine(daemon.Directory.File("state"), "machines")).Should().ContainSingle();
        }
    }

    [Fact(Timeout = 90_000)]
    public async Task One_slow_delete_holds_up_no_other_machines_expiry()
    {
        var ct = TestContext.Current.CancellationToken;
        using var marks = new TempDirectory();
        var cleanupBegan = marks.File("cleanup-began");
        var cleanupDone = marks.File("cleanup-done");
        var daemon = await FalkDaemon.StartAsync($"""
            [slow-cleanup]
            type = custom
            launch = /bin/sleep 1000
            cleanup = /bin/sh -c 'touch "$0"; sleep 15; touch "$1"' {cleanupBegan} {cleanupDone}
            ssh_user = nobody

            [quick]
            type = custom
            launch = /bin/sleep 1000
            ssh_user = nobody
            """, ct);
        await using (daemon)
        {
            var slow = await CreateAsync(daemon, "slow-cleanup", leaseSeconds: 1, ct);
            await Wait.UntilAsync(
                _ => Task.FromResult(File.Exists(cleanupBegan) ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>("cleanup has not begun")),
                TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(20), "the slow machine's cleanup to begin", ct);

            // While that cleanup runs, another machine's lease runs out, and it is destroyed all the same.
            var quick = await CreateAsync(daemon, "quick", leaseSeconds: 2, ct);
            await Wait.UntilAsync(
                async token =>
                {
                    using var response = await daemon.Client.GetAsync($"v1/machines/{quick}", token);
                    return response.StatusCode == HttpStatusCode.NotFound ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>($"still {response.StatusCode}");
                },
                TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(30), "the quick machine's lease to be enforced", ct);
            File.Exists(cleanupDone).Should().BeFalse("the quick machine went while the slow delete was still under way");

            await Wait.UntilAsync(
                async token => (await daemon.Client.ListAsync(token)).Count == 0 ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>($"{slow} still listed"),
                TimeSpan.FromMilliseconds(200), TimeSpan.FromSeconds(40), "the slow delete to finish", ct);
            File.Exists(cleanupDone).Should().BeTrue();
        }
    }

    private static async Task<string> CreateAsync(FalkDaemon daemon, string template, int leaseSeconds, CancellationToken ct)
    {
        using var response = await daemon.Client.PostJsonAsync("v1/machines", new { template, lease_seconds = leaseSeconds }, ct);
        var body = await response.JsonAsync(ct);
        response.StatusCode.Should().Be(HttpStatusCode.Created, body.ToJsonString());
        return body["id"]!.GetValue<string>();
    }
}
