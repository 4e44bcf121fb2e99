using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Falk.Core.Waiting;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Api;

/// <summary>Leases, idempotent creates, limits and the event stream, through the real daemon.</summary>
public sealed class LeaseAndEventTests
{
    private const string Templates = """
        [sleeper]
        type = custom
        launch = /bin/sleep 1000
        ssh_user = nobody
        max_machines = 3
        """;

    [Fact(Timeout = 60_000)]
    public async Task A_machine_whose_lease_is_not_renewed_is_destroyed_within_about_a_second_with_a_lease_expired_event()
    {
        var ct = TestContext.Current.CancellationToken;
        var marker = Random.Shared.Next(100_000, 999_999);
        var daemon = await FalkDaemon.StartAsync(Templates.Replace("sleep 1000", $"sleep {marker}", StringComparison.Ordinal), ct);
        await using (daemon)
        {
            using var created = await daemon.Client.PostJsonAsync("v1/machines", new { template = "sleeper", lease_seconds = 2 }, ct);
            var machine = await created.JsonAsync(ct);
            created.StatusCode.Should().Be(HttpStatusCode.Created, machine.ToJsonString());
            var id = machine["id"]!.GetValue<string>();
            var expiresAt = machine["lease_expires_at"]!.GetValue<DateTimeOffset>();
            expiresAt.Should().BeCloseTo(DateTimeOffset.UtcNow.AddSeconds(2), TimeSpan.FromSeconds(2));
            await daemon.Client.BootAsync(id, ct, "");
            ProcessTable.WithArgument($"sleep {marker}").Should().ContainSingle();

            // From the first event on, until the machine is destroyed (the stream goes quiet for longer than the lease).
            var events = await ReadEventsAsync(daemon.Client, 0, 5, ct, quiet: TimeSpan.FromSeconds(10));

            events.Select(e => e.Type).Should().Equal("created", "booting", "running", "lease_expired", "destroyed");
            var expired = events[3].Data["time"]!.GetValue<DateTimeOffset>();
            (expired - expiresAt).Should().BeGreaterThanOrEqualTo(TimeSpan.Zero).And.BeLessThanOrEqualTo(TimeSpan.FromSeconds(1.5), "README promises within about a second");
            (await daemon.Client.ListAsync(ct)).Should().BeEmpty();
            ProcessTable.WithArgument($"sleep {marker}").Should().BeEmpty();
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task A_renewed_lease_keeps_the_machine_and_bad_leases_are_400()
    {
        var ct = TestContext.Current.CancellationToken;
        var daemon = await FalkDaemon.StartAsync(Templates, ct, "default_lease_seconds = 2\nmax_lease_seconds = 600");
        await using (daemon)
        {
            var id = (await daemon.Client.CreateAsync("sleeper", ct))["id"]!.GetValue<string>();

            using var renewed = await daemon.Client.PutAsJsonAsync($"v1/machines/{id}/lease", new { seconds = 300 }, ct);
            var body = await renewed.JsonAsync(ct);
            renewed.StatusCode.Should().Be(HttpStatusCode.OK);
            body["lease_expires_at"]!.GetValue<DateTimeOffset>().Should().BeCloseTo(DateTimeOffset.UtcNow.AddSeconds(300), TimeSpan.FromSeconds(5));

            await Task.Delay(TimeSpan.FromSeconds(4), ct); // past the default lease: the renewal must hold
            (await daemon.Client.ListAsync(ct)).Should().ContainSingle();

            using var tooLong = await daemon.Client.PutAsJsonAsync($"v1/machines/{id}/lease", new { seconds = 601 }, ct);
            (await tooLong.ShouldBeProblemAsync(HttpStatusCode.BadRequest, "invalid-request", ct))["detail"]!.GetValue<string>().Should().Contain("max_lease_seconds");
            using var createTooLong = await daemon.Client.PostJsonAsync("v1/machines", new { template = "sleeper", lease_seconds = 601 }, ct);
            (await createTooLong.ShouldBeProblemAsync(HttpStatusCode.BadRequest, "invalid-request", ct))["detail"]!.GetValue<string>().Should().Contain("max_lease_seconds");
            using var createZero = await daemon.Client.PostJsonAsync("v1/machines", new { template = "sleeper", lease_seconds = 0 }, ct);
            await createZero.ShouldBeProblemAsync(HttpStatusCode.BadRequest, "invalid-request", ct);
            (await daemon.Client.ListAsync(ct)).Should().ContainSingle();

            using var createLongest = await daemon.Client.PostJsonAsync("v1/machines", new { template = "sleeper", lease_seconds = 600 }, ct);
            createLongest.StatusCode.Should().Be(HttpStatusCode.Created, "max_lease_seconds itself is allowed");
            (await createLongest.JsonAsync(ct))["lease_expires_at"]!.GetValue<DateTimeOffset>().Should().BeCloseTo(DateTimeOffset.UtcNow.AddSeconds(600), TimeSpan.FromSeconds(5));
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task Retries_with_one_Idempotency_Key_get_one_machine()
    {
        var ct = TestContext.Current.CancellationToken;
        var daemon = await FalkDaemon.StartAsync(Templates, ct);
        await using (daemon)
        {
            async Task<string> CreateWithKeyAsync(string key)
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, "v1/machines") { Content = JsonContent.Create(new { template = "sleeper" }) };
                request.Headers.Add("Idempotency-Key", key);
                using var response = await daemon.Client.SendAsync(request, ct);
                response.StatusCode.Should().Be(HttpStatusCode.Created);
                return (await response.JsonAsync(ct))["id"]!.GetValue<string>();
            }

            var ids = await Task.WhenAll(Enumerable.Range(0, 5).Select(_ => CreateWithKeyAsync("job-17-attempt")));
            var other = await CreateWithKeyAsync("job-18-attempt");

            ids.Distinct().Should().ContainSingle();
            other.Should().NotBe(ids[0]);
            (await daemon.Client.ListAsync(ct)).Should().HaveCount(2);
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task Template_and_owner_limits_answer_503_with_Retry_After_and_info_shows_capacity()
    {
        var ct = TestContext.Current.CancellationToken;
        var daemon = await FalkDaemon.StartAsync(Templates + """

            [unlimited]
            type = custom
            launch = /bin/sleep 1000
            ssh_user = nobody
            """, ct, "max_machines_per_owner = 4");
        await using (daemon)
        {
            for (var i = 0; i < 3; i++)
            {
                await daemon.Client.CreateAsync("sleeper", ct);
            }

            using var overTemplate = await daemon.Client.PostJsonAsync("v1/machines", new { template = "sleeper" }, ct);
            (await overTemplate.ShouldBeProblemAsync(HttpStatusCode.ServiceUnavailable, "capacity-exhausted", ct))["detail"]!.GetValue<string>()
                .Should().Contain("template 'sleeper'");
            overTemplate.Headers.RetryAfter!.Delta.Should().BePositive();

            // A template without a limit of its own: the fourth machine of this uid is the owner's last.
            await daemon.Client.CreateAsync("unlimited", ct);
            using var overOwner = await daemon.Client.PostJsonAsync("v1/machines", new { template = "unlimited" }, ct);
            (await overOwner.ShouldBeProblemAsync(HttpStatusCode.ServiceUnavailable, "capacity-exhausted", ct))["detail"]!.GetValue<string>()
                .Should().Contain("max_machines_per_owner");
            overOwner.Headers.RetryAfter!.Delta.Should().BePositive();

            using var info = await daemon.Client.GetAsync("v1/info", ct);
            var capacity = (await info.JsonAsync(ct))["capacity"]!;
            capacity["machines"]!.GetValue<int>().Should().Be(4);
            capacity["ports_in_use"]!.GetValue<int>().Should().Be(4);
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task The_event_stream_tells_every_state_change_and_a_reconnect_gets_what_was_missed()
    {
        var ct = TestContext.Current.CancellationToken;
        var daemon = await FalkDaemon.StartAsync(Templates, ct);
        await using (daemon)
        {
            // A subscriber without Last-Event-ID sees what happens from now on.
            var live = ReadEventsAsync(daemon.Client, null, 1, ct);

            await Task.Delay(300, ct);
            var id = (await daemon.Client.CreateAsync("sleeper", ct))["id"]!.GetValue<string>();
            (await live).Should().ContainSingle().Which.Type.Should().Be("created");
            await daemon.Client.BootAsync(id, ct, "");
            using (var stop = await daemon.Client.PostJsonAsync($"v1/machines/{id}/stop", new { timeout_seconds = 5 }, ct))
            {
                stop.StatusCode.Should().Be(HttpStatusCode.OK);
            }

            await daemon.Client.DeleteMachineAsync(id, ct);

            var all = await ReadEventsAsync(daemon.Client, 0, 6, ct);
            all.Select(e => e.Type).Should().Equal("created", "booting", "running", "stopping", "stopped", "destroyed");
            all.Select(e => e.Id).Should().BeInAscendingOrder().And.OnlyHaveUniqueItems();
            all.Should().AllSatisfy(e => e.Data["machine_id"]!.GetValue<string>().Should().Be(id));

            var missed = await ReadEventsAsync(daemon.Client, all[2].Id, 3, ct);
            missed.Select(e => e.Type).Should().Equal("stopping", "stopped", "destroyed");
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task A_launch_that_dies_is_told_as_a_failed_event_and_its_exit_is_the_last_error()
    {
        var ct = TestContext.Current.CancellationToken;
        var daemon = await FalkDaemon.StartAsync("""
            [dying]
            type = custom
            launch = /bin/sh -c 'echo going >&2; exit 3'
            ssh_user = nobody
            """, ct);
        await using (daemon)
        {
            var id = (await daemon.Client.CreateAsync("dying", ct))["id"]!.GetValue<string>();
            using (await daemon.Client.PostAsync($"v1/machines/{id}/boot", null, ct))
            {
                // Whether the boot answer comes before or after the death, the event stream tells it.
            }

            var events = await ReadEventsAsync(daemon.Client, 0, 4, ct, quiet: TimeSpan.FromSeconds(5));

            var failed = events.Should().ContainSingle(e => e.Type == "failed").Subject;
            failed.Data["machine_id"]!.GetValue<string>().Should().Be(id);
            failed.Data["state"]!.GetValue<string>().Should().Be("failed");
            using var response = await daemon.Client.GetAsync($"v1/machines/{id}", ct);
            var machine = await response.JsonAsync(ct);
            machine["state"]!.GetValue<string>().Should().Be("failed");
            machine["last_error"]!.GetValue<string>().Should().Contain("exited with code 3").And.Contain("going");
        }
    }

    [Fact(Timeout = 180_000)]
    public async Task A_reconnect_from_long_ago_gets_exactly_the_last_1024_events_in_order()
    {
        var ct = TestContext.Current.CancellationToken;
        var daemon = await FalkDaemon.StartAsync(Templates.Replace("max_machines = 3", string.Empty, StringComparison.Ordinal), ct);
        await using (daemon)
        {
            // 530 create + delete: 1060 events, more than the window holds.
            for (var i = 0; i < 530; i++)
            {
                var id = (await daemon.Client.CreateAsync("sleeper", ct))["id"]!.GetValue<string>();
                await daemon.Client.DeleteMachineAsync(id, ct);
            }

            var replayed = await ReadEventsAsync(daemon.Client, 0, 2_000, ct);

            replayed.Should().HaveCount(1024);
            replayed.Select(e => e.Id).Should().Equal(Enumerable.Range(1060 - 1024 + 1, 1024).Select(i => (long)i), "the newest 1024, none skipped");
            replayed[^1].Type.Should().Be("destroyed");
        }
    }

    internal sealed record Sse(long Id, string Type, JsonNode Data);

    /// <summary>Reads server-sent events until <paramref name="expected"/> or the stream goes quiet for <paramref name="quiet"/> (two seconds).</summary>
    internal static async Task<List<Sse>> ReadEventsAsync(HttpClient client, long? lastEventId, int expected, CancellationToken ct, TimeSpan? quiet = null)
    {
        var quietFor = quiet ?? TimeSpan.FromSeconds(2);
        using var request = new HttpRequestMessage(HttpMethod.Get, "v1/events");
        if (lastEventId is { } last)
        {
            request.Headers.Add("Last-Event-ID", last.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }

        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct);
        response.Content.Headers.ContentType!.MediaType.Should().Be("text/event-stream");
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(ct));
        var events = new List<Sse>();
        string? type = null, data = null, id = null;
        using var quietToken = CancellationTokenSource.CreateLinkedTokenSource(ct);
        quietToken.CancelAfter(quietFor);
        try
        {
            while (events.Count < expected && await reader.ReadLineAsync(quietToken.Token) is { } line)
            {
                if (line.Length == 0)
                {
                    events.Add(new Sse(long.Parse(id!, System.Globalization.CultureInfo.InvariantCulture), type!, JsonNode.Parse(data!)!));
                    (type, data, id) = (null, null, null);
                    quietToken.CancelAfter(quietFor);
                }
                else if (line.StartsWith("event: ", StringComparison.Ordinal))
                {
                    type = line[7..];
                }
                else if (line.StartsWith("data: ", StringComparison.Ordinal))
                {
                    data = line[6..];
                }
                else if (line.StartsWith("id: ", StringComparison.Ordinal))
                {
                    id = line[4..];
                }
            }
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            // Quiet for a while: everything there was has been read.
        }

        return events;
    }
}
