using System.Net;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Api;

/// <summary>Sections sharing a name form a pool: a create by name takes any section with room, by section id exactly that one.</summary>
public sealed class TemplatePoolTests
{
    private const string Pool = """
        [small-1]
        name = small
        type = custom
        launch = sleep 600
        ssh_user = u
        max_machines = 1

        [small-2]
        name = small
        type = custom
        launch = sleep 600
        ssh_user = u
        max_machines = 2
        """;

    [Fact(Timeout = 60_000)]
    public async Task A_name_fills_every_section_of_its_pool_before_answering_503()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var daemon = await FalkDaemon.StartAsync(Pool, ct);

        var first = await daemon.Client.CreateAsync("small", ct);
        var second = await daemon.Client.CreateAsync("small", ct);
        // Both sections hold one now; small-1 comes first but is full: the name must go on to small-2.
        var third = await daemon.Client.CreateAsync("small", ct);
        using var fourth = await daemon.Client.PostJsonAsync("v1/machines", new { template = "small" }, ct);
        using var bySection = await daemon.Client.PostJsonAsync("v1/machines", new { template = "small-2" }, ct);

        await fourth.ShouldBeProblemAsync(HttpStatusCode.ServiceUnavailable, "capacity-exhausted", ct);
        fourth.Headers.RetryAfter.Should().NotBeNull();
        await bySection.ShouldBeProblemAsync(HttpStatusCode.ServiceUnavailable, "capacity-exhausted", ct);

        // Room in one section of the pool is enough for the name again.
        await daemon.Client.DeleteMachineAsync(first["id"]!.GetValue<string>(), ct);
        var again = await daemon.Client.CreateAsync("small", ct);
        again["template"]!.GetValue<string>().Should().Be("small");
        await daemon.Client.DeleteMachineAsync(third["id"]!.GetValue<string>(), ct);
        await daemon.Client.DeleteMachineAsync(second["id"]!.GetValue<string>(), ct);
        await daemon.Client.DeleteMachineAsync(again["id"]!.GetValue<string>(), ct);
    }

    [Fact(Timeout = 60_000)]
    public async Task An_original_falk_conf_with_shared_names_passes_check_config()
    {
        var ct = TestContext.Current.CancellationToken;
        using var directory = new TempDirectory();
        var config = directory.File("falk.conf");
        await File.WriteAllTextAsync(config, $"""
            [falk]
            name = kevin-falk
            control_socket = {directory.File("falk.sock")}
            control_socket_permissions = 770
            vm_ports = [7888,8000]

            {Pool}
            """, ct);

        var (exitCode, stdout, stderr) = await FalkDaemon.RunToEndAsync(["--check-config", "-c", config], ct);

        exitCode.Should().Be(0, stderr);
        stdout.Should().Contain("[small-1] small (custom)").And.Contain("[small-2] small (custom)");
    }
}
