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
    public async Task A_machine_whose_lease_is_not_renewed_is_destroyed_a_few_seconds_after_it_ends()
    {
        var ct = TestContext.Current.CancellationToken;
        var marker = Random.Shared.Next(100_000, 999_999);
        var daemon = await FalkDaemon.StartAsync(Templates.Replace("sleep 1000", $"sleep {marker}", StringComparison.Ordinal), ct);
        await using (daemon)
        {
            using var created = await daemon.Client.PostJsonAsync("v1/machines", new { template = "sleeper", lease_seconds = 2 }, ct);
            var machine = await created.JsonAsync(ct);
            var id = machine["id"]!.GetValue<string>();
            var expiresAt = machine["lease_expires_at"]!.GetValue<DateTimeOffset>();
            expiresAt.Should().BeCloseTo(DateTimeOffset.UtcNow.AddSeconds(2), TimeSpan.FromSeconds(2));
            await daemon.Client.BootAsync(id, ct, "");
            ProcessTable.WithArgument($"sleep {marker}").Should().ContainSingle();

            await Wait.UntilAsync(
                async c => (await daemon.Client.ListAsync(c)).Count == 0 ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>("still there"),
                TimeSpan.FromMilliseconds(200), TimeSpan.FromSeconds(15), "the expired machine to go", ct);

            DateTimeOffset.UtcNow.Should().BeBefore(expiresAt.AddSeconds(5));
            ProcessTable.WithArgument($"sleep {marker}").Should().BeEmpty();
            daemon.Output.Should().Contain($"Machine {id}: lease expired");
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
            using var createTooLong = await daemon.Client.PostJsonAsync("v1/machines", new { template = "sleeper", lease_seconds = 0 }, ct);
            await createTooLong.ShouldBeProblemAsync(HttpStatusCode.BadRequest, "invalid-request", ct);
            (await daemon.Client.ListAsync(ct)).Should().ContainSingle();
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
        var daemon = await FalkDaemon.StartAsync(Templates, ct, "max_machines_per_owner = 5");
        await using (daemon)
        {
            for (var i = 0; i < 3; i++)
            {
                await daemon.Client.CreateAsync("sleeper", ct);
            }

            using var overTemplate = await daemon.Client.PostJsonAsync("v1/machines", new { template = "sleeper" }, ct);
            (await overTemplate.ShouldBeProblemAsync(HttpStatusCode.ServiceUnavailable, "capacity-exhausted", ct))["detail"]!.GetValue<string>()
                .Should().Contain("template 'sleeper'");
            overTemplate.Headers.RetryAfter.Should().NotBeNull();

            using var info = await daemon.Client.GetAsync("v1/info", ct);
            var capacity = (await info.JsonAsync(ct))["capacity"]!;
            capacity["machines"]!.GetValue<int>().Should().Be(3);
            capacity["ports_in_use"]!.GetValue<int>().Should().Be(3);
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

    private sealed record Sse(long Id, string Type, JsonNode Data);

    /// <summary>Reads server-sent events until <paramref name="expected"/> or the stream goes quiet for a second.</summary>
    private static async Task<List<Sse>> ReadEventsAsync(HttpClient client, long? lastEventId, int expected, CancellationToken ct)
    {
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
        using var quiet = CancellationTokenSource.CreateLinkedTokenSource(ct);
        quiet.CancelAfter(TimeSpan.FromSeconds(2));
        try
        {
            while (events.Count < expected && await reader.ReadLineAsync(quiet.Token) is { } line)
            {
                if (line.Length == 0)
                {
                    events.Add(new Sse(long.Parse(id!, System.Globalization.CultureInfo.InvariantCulture), type!, JsonNode.Parse(data!)!));
                    (type, data, id) = (null, null, null);
                    quiet.CancelAfter(TimeSpan.FromSeconds(2));
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
