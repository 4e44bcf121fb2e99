using System.Globalization;
using System.Text.Json.Nodes;
using Falk.Core.Backends.Qemu.Qmp;
using Falk.Core.Processes;
using Falk.Core.Waiting;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Backends.Qemu;

/// <summary>The QMP client against a scripted peer on a temporary socket, and against a real QEMU.</summary>
public sealed class QmpClientTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    private string SocketPath => _dir.File("qmp.sock");

    public void Dispose() => _dir.Dispose();

    [Fact(Timeout = 20_000)]
    public async Task It_reads_the_greeting_negotiates_capabilities_and_matches_responses_to_requests_by_id()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var server = FakeQmpServer.StartNegotiated(SocketPath, async peer =>
        {
            var first = await peer.ReceiveAsync();
            var second = await peer.ReceiveAsync();
            first!["id"]!.ToJsonString().Should().NotBe(second!["id"]!.ToJsonString(), "every request has an id of its own");
            second["arguments"]!["x"]!.GetValue<int>().Should().Be(2);

            // Answered in the opposite order: ids, not order, decide.
            await peer.SendAsync($$"""{"return": {"for": "second"}, "id": {{second["id"]!.ToJsonString()}}, "unknown-key": true}""");
            await peer.SendAsync($$"""{"return": {"for": "first"}, "id": {{first["id"]!.ToJsonString()}}}""");
        });
        await using var client = await QmpClient.ConnectAsync(SocketPath, ct);

        var first = client.ExecuteAsync("query-status", ct);
        var second = client.ExecuteAsync("query-name", new JsonObject { ["x"] = 2 }, ct);

        (await second)!["for"]!.GetValue<string>().Should().Be("second");
        (await first)!["for"]!.GetValue<string>().Should().Be("first");
        client.Greeting["QMP"]!["version"]!["qemu"]!["major"]!.GetValue<int>().Should().Be(7);
        await server.Session;
    }

    [Fact(Timeout = 20_000)]
    public async Task A_QMP_error_is_a_typed_exception_with_its_class_and_description()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var server = FakeQmpServer.StartNegotiated(SocketPath, async peer =>
        {
            var request = await peer.ReceiveAsync();
            await peer.SendAsync($$"""{"error": {"class": "CommandNotFound", "desc": "The command frobnicate has not been found"}, "id": {{request!["id"]!.ToJsonString()}}}""");
        });
        await using var client = await QmpClient.ConnectAsync(SocketPath, ct);

        var act = () => client.ExecuteAsync("frobnicate", ct);

        var error = (await act.Should().ThrowAsync<QmpErrorException>()).Which;
        error.ErrorClass.Should().Be("CommandNotFound");
        error.Description.Should().Be("The command frobnicate has not been found");
        error.Command.Should().Be("frobnicate");
        error.Message.Should().Contain("frobnicate").And.Contain("CommandNotFound");
    }

    [Fact(Timeout = 20_000)]
    public async Task Events_arrive_on_the_channel_in_order_between_responses()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var server = FakeQmpServer.StartNegotiated(SocketPath, async peer =>
        {
            var request = await peer.ReceiveAsync();
            await peer.SendAsync("""{"event": "POWERDOWN", "timestamp": {"seconds": 1700000000, "microseconds": 250000}}""");
            await peer.SendAsync($$"""{"return": {}, "id": {{request!["id"]!.ToJsonString()}}}""");
            await peer.SendAsync("""{"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}, "timestamp": {"seconds": 1700000001, "microseconds": 0}}""");
            await peer.SendAsync("""{"event": "JOB_STATUS_CHANGE", "data": {"id": "snap0", "status": "concluded"}, "timestamp": {"seconds": 1700000002, "microseconds": 0}}""");
        });
        await using var client = await QmpClient.ConnectAsync(SocketPath, ct);

        await client.ExecuteAsync("system_powerdown", ct);

        var powerdown = await client.Events.ReadAsync(ct);
        powerdown.Name.Should().Be(QmpEvent.Powerdown);
        powerdown.Timestamp.Should().Be(DateTimeOffset.FromUnixTimeMilliseconds(1_700_000_000_250));
        var shutdown = await client.Events.ReadAsync(ct);
        shutdown.Name.Should().Be(QmpEvent.Shutdown);
        shutdown.Reason.Should().Be("guest-shutdown");
        var job = await client.Events.ReadAsync(ct);
        job.Name.Should().Be(QmpEvent.JobStatusChange);
        job.Data!["status"]!.GetValue<string>().Should().Be("concluded");
    }

    [Fact(Timeout = 20_000)]
    public async Task Every_pending_request_fails_when_the_connection_ends_and_the_event_channel_completes()
    {
        var ct = TestContext.Current.CancellationToken;
        var bothReceived = new TaskCompletionSource();
        await using var server = FakeQmpServer.StartNegotiated(SocketPath, async peer =>
        {
            await peer.ReceiveAsync();
            await peer.ReceiveAsync();
            bothReceived.SetResult();
            peer.Close();
        });
        await using var client = await QmpClient.ConnectAsync(SocketPath, ct);

        var first = client.ExecuteAsync("query-status", ct);
        var second = client.ExecuteAsync("query-block", ct);
        await bothReceived.Task.WaitAsync(ct);

        await FluentActions.Awaiting(() => first).Should().ThrowAsync<QmpConnectionException>().WithMessage("*query-status*");
        await FluentActions.Awaiting(() => second).Should().ThrowAsync<QmpConnectionException>().WithMessage("*query-block*");
        await client.Closed.WaitAsync(ct);
        (await client.Events.WaitToReadAsync(ct)).Should().BeFalse("the channel completes with the connection");
        await FluentActions.Awaiting(() => client.ExecuteAsync("query-status", ct)).Should().ThrowAsync<QmpConnectionException>("a closed client refuses at once");
    }

    [Fact(Timeout = 20_000)]
    public async Task A_peer_that_does_not_greet_with_QMP_is_refused()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var server = FakeQmpServer.Start(SocketPath, peer => peer.SendAsync("""{"hello": "not qmp"}"""));

        var act = () => QmpClient.ConnectAsync(SocketPath, ct);

        (await act.Should().ThrowAsync<QmpConnectionException>()).Which.Message.Should().Contain("did not greet with QMP");
    }

    [Fact(Timeout = 20_000)]
    public async Task A_cancelled_request_stops_waiting_and_a_late_answer_to_it_is_ignored()
    {
        var ct = TestContext.Current.CancellationToken;
        var cancelled = new TaskCompletionSource();
        await using var server = FakeQmpServer.StartNegotiated(SocketPath, async peer =>
        {
            var slow = await peer.ReceiveAsync();
            await cancelled.Task;
            await peer.SendAsync($$"""{"return": "late", "id": {{slow!["id"]!.ToJsonString()}}}""");
            var next = await peer.ReceiveAsync();
            await peer.SendAsync($$"""{"return": "next", "id": {{next!["id"]!.ToJsonString()}}}""");
        });
        await using var client = await QmpClient.ConnectAsync(SocketPath, ct);
        using var cancel = new CancellationTokenSource();

        var slow = client.ExecuteAsync("query-slow", cancel.Token);
        await cancel.CancelAsync();
        await FluentActions.Awaiting(() => slow).Should().ThrowAsync<OperationCanceledException>();
        cancelled.SetResult();

        (await client.ExecuteAsync("query-next", ct))!.GetValue<string>().Should().Be("next");
    }

    [Fact(Timeout = 60_000)]
    public async Task Against_real_QEMU_it_reads_status_sees_STOP_RESUME_and_SHUTDOWN_and_fails_requests_when_QEMU_exits()
    {
        var ct = TestContext.Current.CancellationToken;
        var qemu = RunningProcess.Start(new ProcessSpec(
        [
            "qemu-system-x86_64", "-machine", "none", "-nodefaults", "-no-user-config", "-display", "none",
            "-qmp", $"unix:{SocketPath},server=on,wait=off",
        ]) { OwnProcessGroup = true });
        await using (qemu)
        {
            await using var client = await Wait.UntilAsync(async c =>
            {
                try
                {
                    return ProbeOutcome.Done(await QmpClient.ConnectAsync(SocketPath, c));
                }
                catch (System.Net.Sockets.SocketException e)
                {
                    return ProbeOutcome.NotYet<QmpClient>(e.Message);
                }
            }, TimeSpan.FromMilliseconds(20), TimeSpan.FromSeconds(20), "QEMU's QMP socket", ct, qemu.Exited);

            (await client.ExecuteAsync("query-status", ct))!["status"]!.GetValue<string>().Should().Be("running");
            await client.ExecuteAsync("stop", ct);
            (await client.Events.ReadAsync(ct)).Name.Should().Be(QmpEvent.Stop);
            (await client.ExecuteAsync("query-status", ct))!["status"]!.GetValue<string>().Should().Be("paused");
            await client.ExecuteAsync("cont", ct);
            (await client.Events.ReadAsync(ct)).Name.Should().Be(QmpEvent.Resume);
            var error = await FluentActions.Awaiting(() => client.ExecuteAsync("no-such-command", ct)).Should().ThrowAsync<QmpErrorException>();
            error.Which.ErrorClass.Should().Be("CommandNotFound");

            await client.ExecuteAsync("quit", ct);

            var shutdown = await client.Events.ReadAsync(ct);
            shutdown.Name.Should().Be(QmpEvent.Shutdown);
            shutdown.Reason.Should().Be("host-qmp-quit");
            await client.Closed.WaitAsync(TimeSpan.FromSeconds(10), ct);
            await FluentActions.Awaiting(() => client.ExecuteAsync("query-status", ct)).Should().ThrowAsync<QmpConnectionException>();
            (await qemu.Exited.WaitAsync(TimeSpan.FromSeconds(10), ct)).Should().Be(0, string.Create(CultureInfo.InvariantCulture, $"QEMU quit: {qemu.OutputTail()}"));
        }
    }
}
