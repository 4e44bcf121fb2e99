using Falk.Core.Machines;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Protocol;

/// <summary>Kevin sends no Terminate or Cleanup after a failed Prepare or Launch: the daemon destroys that machine itself.</summary>
public sealed class ProtocolFailureTests
{
    [Fact(Timeout = 60_000)]
    public async Task A_failed_prepare_answers_error_and_leaves_no_machine_behind()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var daemon = await FalkDaemon.StartAsync("""
            [volatile-only]
            type = custom
            prepare = /bin/sh -c 'test -z "$FALK_MANAGE" || { echo no management here >&2; exit 3; }'
            launch = sleep 600
            ssh_user = chantal
            """, ct);
        await using var kevin = await LegacyProtocolClient.ConnectAsync(daemon.SocketPath, ct);
        await kevin.KevinHandshakeAsync(sendLogin: true, ct);
        var runId = (await kevin.ExpectAsync("""{"name": "volatile-only", "class": "Select"}""", "RunID", ct, "run_id"))["run_id"]!.GetValue<long>();
        var machine = (await daemon.Client.ListAsync(ct)).Should().ContainSingle().Subject!;
        var port = machine["ssh"]!["port"]!.GetValue<int>();

        // Management mode is chosen at creation: the machine is made again, and that prepare fails.
        var prepare = await kevin.ExpectAsync($$"""{"run_id": {{runId}}, "manage": true, "class": "Prepare"}""", "Error", ct, "msg");

        prepare["msg"]!.GetValue<string>().Should().Contain("exit");
        (await daemon.Client.ListAsync(ct)).Should().BeEmpty("the machine goes with the failed Prepare, not when the connection ends");
        PortAllocator.IsFreeOnHost(port).Should().BeTrue();
        (await kevin.QueryAsync($$"""{"run_id": {{runId}}, "class": "Status"}""", ct))["msg"]!.GetValue<string>().Should().Be($"KeyError({runId})");
        await kevin.ExpectAsync("""{"version": 0, "class": "Version"}""", "OK", ct, "msg");
    }
}
