using Falk.Tests.Fixtures;

namespace Falk.Tests.Protocol;

/// <summary>A justin-era config (<c>[justin]</c>): the same wire, but Status is answered with <c>MachineStatus</c>, which justin-era Kevin expects.</summary>
public sealed class JustinEraTests
{
    [Fact(Timeout = 60_000)]
    public async Task A_justin_conf_is_served_and_status_is_answered_with_MachineStatus()
    {
        var ct = TestContext.Current.CancellationToken;
        using var directory = new TempDirectory();
        var socket = directory.File("justin.sock");
        var (first, last) = TestPorts.NextRange(2);
        var config = directory.File("justin.conf");
        await File.WriteAllTextAsync(config, $"""
            [justin]
            name = justin-test
            control_socket = {socket}
            vm_ports = [{first},{last}]
            state_dir = {directory.File("state")}
            on_shutdown = destroy

            [sleeper]
            type = custom
            launch = sleep 600
            ssh_user = chantal
            """, ct);
        using var http = UnixHttp.CreateClient(socket);
        var daemon = await LocalFalkd.StartAsync(config, http, null, ct);
        await using (daemon)
        {
            await using var kevin = await LegacyProtocolClient.ConnectAsync(socket, ct);
            await kevin.KevinHandshakeAsync(sendLogin: true, ct);
            var runId = (await kevin.QueryAsync("""{"name": "sleeper", "class": "Select"}""", ct))["run_id"]!.GetValue<long>();

            var status = await kevin.ExpectAsync($$"""{"run_id": {{runId}}, "class": "Status"}""", "MachineStatus", ct, "run_id", "running");

            status["running"]!.GetValue<bool>().Should().BeFalse();
            (await kevin.QueryAsync("""{"class": "Help"}""", ct))["text"]!.GetValue<string>().Should().StartWith("\njustin shell\n");
            await daemon.StopAsync(TimeSpan.FromSeconds(20), ct);
        }
    }
}
