using System.Net;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Api;

/// <summary>Answers README.md promises that other tests do not reach: a template by name, a fixed ssh_port, a wait that times out.</summary>
public sealed class PromisedAnswersTests
{
    [Fact(Timeout = 60_000)]
    public async Task A_template_is_answered_by_name_and_an_unknown_one_is_404()
    {
        var ct = TestContext.Current.CancellationToken;
        var daemon = await FalkDaemon.StartAsync("""
            [local]
            type = custom
            name = debian-sid
            launch = /bin/sleep 1000
            ssh_user = chantal
            ssh_host = 127.0.0.1
            """, ct);
        await using (daemon)
        {
            using var response = await daemon.Client.GetAsync("v1/templates/debian-sid", ct);
            var template = await response.JsonAsync(ct);
            response.StatusCode.Should().Be(HttpStatusCode.OK, template.ToJsonString());
            template["id"]!.GetValue<string>().Should().Be("local");
            template["name"]!.GetValue<string>().Should().Be("debian-sid");
            template["type"]!.GetValue<string>().Should().Be("custom");
            template["ssh_user"]!.GetValue<string>().Should().Be("chantal");
            template["ssh_host"]!.GetValue<string>().Should().Be("127.0.0.1");
            template["manage_supported"]!.GetValue<bool>().Should().BeTrue();
            template["host_key_source"]!.GetValue<string>().Should().Be("observed");
            template["host_key_verified"]!.GetValue<bool>().Should().BeFalse();

            using var unknown = await daemon.Client.GetAsync("v1/templates/debian-bookworm", ct);
            unknown.StatusCode.Should().Be(HttpStatusCode.NotFound);
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task A_fixed_ssh_port_serves_one_machine_at_a_time_and_the_next_gets_503_with_Retry_After_until_it_is_deleted()
    {
        var ct = TestContext.Current.CancellationToken;
        var (fixedPort, _) = TestPorts.NextRange(1);
        var daemon = await FalkDaemon.StartAsync($"""
            [fixed]
            type = custom
            launch = /bin/sleep 1000
            ssh_user = nobody
            ssh_port = {fixedPort}
            """, ct);
        await using (daemon)
        {
            var first = await daemon.Client.CreateAsync("fixed", ct);
            first["ssh"]!["port"]!.GetValue<int>().Should().Be(fixedPort);

            using (var second = await daemon.Client.PostJsonAsync("v1/machines", new { template = "fixed" }, ct))
            {
                await second.ShouldBeProblemAsync(HttpStatusCode.ServiceUnavailable, "capacity-exhausted", ct);
                second.Headers.RetryAfter!.Delta.Should().BePositive();
            }

            await daemon.Client.DeleteMachineAsync(first["id"]!.GetValue<string>(), ct);
            (await daemon.Client.CreateAsync("fixed", ct))["ssh"]!["port"]!.GetValue<int>().Should().Be(fixedPort, "the port is free again");
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task Waiting_for_a_machine_that_does_not_stop_answers_504_and_leaves_it_running()
    {
        var ct = TestContext.Current.CancellationToken;
        var daemon = await FalkDaemon.StartAsync("""
            [local]
            type = custom
            launch = /bin/sleep 1000
            ssh_user = nobody
            """, ct);
        await using (daemon)
        {
            var id = (await daemon.Client.CreateAsync("local", ct))["id"]!.GetValue<string>();
            await daemon.Client.BootAsync(id, ct, "");

            using var waited = await daemon.Client.PostAsync($"v1/machines/{id}/wait?condition=stopped&timeout=1", null, ct);

            (await waited.ShouldBeProblemAsync(HttpStatusCode.GatewayTimeout, "wait-timeout", ct))["detail"]!.GetValue<string>().Should().Contain("1 s");
            (await daemon.Client.StateAsync(id, ct)).Should().Be("running");
        }
    }
}
