using Falk.Tests.Fixtures;

namespace Falk.Tests.Backends.Lxd;

/// <summary>A warm pool of LXD instances through the real daemon and the host's real LXD.</summary>
[Collection(LxdTests.Name)]
public sealed class LxdWarmPoolTests(LxdHost lxd)
{
    [Fact(Timeout = 300_000)]
    public async Task A_pooled_instance_is_handed_out_running_and_chantal_logs_in_at_once()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var falk = await LxdDaemon.StartAsync(lxd, ct, $"""
            [warm]
            type = lxd
            base_image = {lxd.ImageAlias}
            ssh_user = {LxdHost.User}
            ssh_host = 127.0.0.1
            pool_size = 1
            """);

        var pooled = (await falk.Client.WaitForPoolAsync("warm", 1, ct, TimeSpan.FromMinutes(2))).Single()["id"]!.GetValue<string>();
        (await falk.InstancesAsync(ct)).Should().Equal(new Dictionary<string, string> { [pooled] = "Running" });

        var machine = await falk.Client.CreateAsync("warm", ct);
        machine["id"]!.GetValue<string>().Should().Be(pooled);
        machine["state"]!.GetValue<string>().Should().Be("running");
        machine["ssh"]!["known_host_key_verified"]!.GetValue<bool>().Should().BeTrue();
        (await MachineSsh.RunAsync(machine, LxdHost.User, lxd.ClientKeyPath, "echo hello-from-$(id -un)", ct)).Should().Be("hello-from-chantal");

        await falk.Client.DeleteMachineAsync(pooled, ct);
        (await falk.InstancesAsync(ct)).Should().NotContainKey(pooled);
    }
}
