using System.Net;
using System.Text.Json.Nodes;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Api;

/// <summary>
/// Warm pools (<c>pool_size</c>) through the real falkd, with Debian's sshd as the custom template's machine: machines
/// booted and verified ahead of demand are handed out by create, the pool refills, and dead, deleted or taken-back pooled
/// machines are dealt with like any machine.
/// </summary>
public sealed class WarmPoolTests : IAsyncLifetime
{
    private readonly TempDirectory _keys = new();
    private SshServerFiles _ssh = null!;

    public async ValueTask InitializeAsync() => _ssh = await SshServerFiles.CreateAsync(_keys.Path, TestContext.Current.CancellationToken);

    public ValueTask DisposeAsync()
    {
        ProcessTable.KillWithArgument(_ssh.ConfigPath);
        _keys.Dispose();
        return ValueTask.CompletedTask;
    }

    [Fact(Timeout = 90_000)]
    public async Task A_create_gets_a_running_verified_machine_from_the_pool_with_its_labels_and_lease_and_the_pool_refills()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var daemon = await StartAsync(poolSize: 2, ct);
        var waiting = await WaitForReadyAsync(daemon, 2, ct);

        var before = DateTimeOffset.UtcNow;
        using var response = await daemon.Client.PostJsonAsync("v1/machines", new { template = "warm", labels = new { job = "42" }, lease_seconds = 600 }, ct);
        var machine = await response.JsonAsync(ct);

        response.StatusCode.Should().Be(HttpStatusCode.Created, machine.ToJsonString());
        var id = machine["id"]!.GetValue<string>();
        waiting.Should().Contain(id, "the machine is one that waited in the pool");
        machine["state"]!.GetValue<string>().Should().Be("running");
        machine["owner_uid"]!.GetValue<int>().Should().Be(int.Parse(File.ReadAllLines("/proc/self/status").Single(l => l.StartsWith("Uid:", StringComparison.Ordinal)).Split('\t')[1], System.Globalization.CultureInfo.InvariantCulture), "the client owns it now");
        machine["labels"]!["job"]!.GetValue<string>().Should().Be("42");
        machine["lease_expires_at"]!.GetValue<DateTimeOffset>().Should().BeCloseTo(before.AddSeconds(600), TimeSpan.FromSeconds(10));
        machine["created_at"]!.GetValue<DateTimeOffset>().Should().BeOnOrAfter(before.AddMilliseconds(-5), "a pooled machine's life as the client's starts at hand-out");
        machine["ssh"]!["known_host_key_verified"]!.GetValue<bool>().Should().BeTrue();
        var sshd = SshdOf(id);

        // The README's flow goes on working: boot with wait=ssh answers at once and launches nothing.
        var booted = await daemon.Client.BootAsync(id, ct);
        booted["state"]!.GetValue<string>().Should().Be("running");
        SshdOf(id).Should().Equal(sshd, "a running, verified machine is never launched twice");
        (await MachineSsh.RunAsync(machine, _ssh.User, _ssh.ClientKeyPath, "echo hello from the pool", ct)).Should().Be("hello from the pool");

        // The event stream tells the machine's story: it joined the pool (the daemon's), then was handed out to the client.
        var story = (await daemon.Client.ReadEventsAsync(0, 1_000, ct, quiet: TimeSpan.FromSeconds(1)))
            .Where(e => e.Data["machine_id"]!.GetValue<string>() == id).ToList();
        story.Select(e => e.Type).Should().ContainInOrder("created", "ready", "running", "pooled", "created");
        story.Single(e => e.Type == "pooled").Data["owner_uid"]!.GetValue<int>().Should().Be(-1);
        story.Last(e => e.Type == "created").Data["detail"]!.GetValue<string>().Should().Be("warm pool");
        story.Last(e => e.Type == "created").Data["state"]!.GetValue<string>().Should().Be("running");

        var refilled = await WaitForReadyAsync(daemon, 2, ct);
        refilled.Should().NotContain(id);
        var info = await InfoAsync(daemon, ct);
        info["capacity"]!["machines"]!.GetValue<int>().Should().Be(3, "two pooled machines and the client's");

        await daemon.Client.DeleteMachineAsync(id, ct);
        SshdOf(id).Should().BeEmpty();
    }

    [Fact(Timeout = 90_000)]
    public async Task Twenty_concurrent_creates_against_a_pool_of_three_each_get_a_machine_of_their_own()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var daemon = await StartAsync(poolSize: 3, ct, ports: 30);
        var waiting = await WaitForReadyAsync(daemon, 3, ct);

        var creates = await Task.WhenAll(Enumerable.Range(0, 20).Select(async i =>
        {
            using var response = await daemon.Client.PostJsonAsync("v1/machines", new { template = "warm", labels = new { n = i.ToString(System.Globalization.CultureInfo.InvariantCulture) } }, ct);
            var body = await response.JsonAsync(ct);
            response.StatusCode.Should().Be(HttpStatusCode.Created, body.ToJsonString());
            return body;
        }));

        var ids = creates.Select(Remember).ToList();
        ids.Should().OnlyHaveUniqueItems();
        ids.Intersect(waiting).Should().HaveCount(3, "every pooled machine was handed out, each once");
        creates.Where(c => waiting.Contains(c["id"]!.GetValue<string>())).Select(c => c["labels"]!["n"]!.GetValue<string>()).Should().OnlyHaveUniqueItems();
        var booted = await Task.WhenAll(ids.Select(id => daemon.Client.BootAsync(id, ct)));
        booted.Should().OnlyContain(b => b["state"]!.GetValue<string>() == "running");
        ids.Select(id => SshdOf(id).Count).Should().OnlyContain(n => n == 1, "one sshd per machine, none launched twice");
    }

    [Fact(Timeout = 90_000)]
    public async Task A_pooled_machine_killed_outside_Falk_is_replaced_and_never_handed_out()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var daemon = await StartAsync(poolSize: 1, ct);
        var victim = (await WaitForReadyAsync(daemon, 1, ct)).Single();

        var victimSshd = SshdOf(victim);
        victimSshd.Should().ContainSingle();
        Falk.Core.Unix.ProcessTree.Kill(victimSshd[0]);

        // Once falkd has noticed the death, the dead machine must never be handed out. (The exit is reported
        // asynchronously: a create in the moment between the kill and that notice can still get it.)
        await Falk.Core.Waiting.Wait.UntilAsync(async probeCt =>
        {
            using var response = await daemon.Client.GetAsync($"v1/machines/{victim}", probeCt);
            var state = response.IsSuccessStatusCode ? (await response.JsonAsync(probeCt))["state"]!.GetValue<string>() : "gone";
            return state == "running" ? Falk.Core.Waiting.ProbeOutcome.NotYet<bool>("still running") : Falk.Core.Waiting.ProbeOutcome.Done(true);
        }, TimeSpan.FromMilliseconds(20), TimeSpan.FromSeconds(10), "falkd noticing the pooled machine's death", ct);
        var created = await daemon.Client.CreateAsync("warm", ct);
        created["id"]!.GetValue<string>().Should().NotBe(victim);
        created = await daemon.Client.BootAsync(created["id"]!.GetValue<string>(), ct);
        (await MachineSsh.RunAsync(created, _ssh.User, _ssh.ClientKeyPath, "echo alive", ct)).Should().Be("alive");

        var replacement = (await WaitForReadyAsync(daemon, 1, ct)).Single();
        replacement.Should().NotBe(victim);
        (await daemon.Client.ListAsync(ct)).Select(m => m!["id"]!.GetValue<string>()).Should().NotContain(victim, "the dead machine was destroyed");
        daemon.Output.Should().Contain($"Pooled machine {victim} of template warm is");
    }

    [Fact(Timeout = 90_000)]
    public async Task An_admin_deletes_a_pooled_machine_and_the_pool_makes_another()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var daemon = await StartAsync(poolSize: 1, ct);
        var pooled = (await WaitForReadyAsync(daemon, 1, ct)).Single();
        (await daemon.Client.ListAsync(ct)).Single(m => m!["id"]!.GetValue<string>() == pooled)!["owner_uid"]!.GetValue<int>().Should().Be(-1, "the daemon owns its pool");

        await daemon.Client.DeleteMachineAsync(pooled, ct);

        SshdOf(pooled).Should().BeEmpty();
        (await WaitForReadyAsync(daemon, 1, ct)).Single().Should().NotBe(pooled);
    }

    [Fact(Timeout = 90_000)]
    public async Task Pooled_machines_count_against_max_machines_and_give_way_to_a_create_that_would_not_fit()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var daemon = await StartAsync(poolSize: 2, ct, daemonExtra: "max_machines = 3");
        var waiting = await WaitForReadyAsync(daemon, 2, ct);
        (await InfoAsync(daemon, ct))["capacity"]!["machines"]!.GetValue<int>().Should().Be(2);

        // Two cold machines: the first fits beside the pool, the second only once a pooled machine makes way.
        var first = (await daemon.Client.CreateAsync("cold", ct))["id"]!.GetValue<string>();
        var second = (await daemon.Client.CreateAsync("cold", ct))["id"]!.GetValue<string>();

        var info = await InfoAsync(daemon, ct);
        info["capacity"]!["machines"]!.GetValue<int>().Should().Be(3);
        var pool = info["pools"]!.AsArray().Single()!;
        (pool["ready"]!.GetValue<int>() + pool["filling"]!.GetValue<int>()).Should().Be(1, "the pool cannot refill past max_machines");
        var left = waiting.Intersect((await daemon.Client.ListAsync(ct)).Select(m => m!["id"]!.GetValue<string>())).Single();

        // The last pooled machine goes to the next create of its template; then the daemon is full of clients' machines.
        (await daemon.Client.CreateAsync("warm", ct))["id"]!.GetValue<string>().Should().Be(left);
        using (var full = await daemon.Client.PostJsonAsync("v1/machines", new { template = "warm" }, ct))
        {
            (await full.ShouldBeProblemAsync(HttpStatusCode.ServiceUnavailable, "capacity-exhausted", ct))["detail"]!.GetValue<string>().Should().Contain("max_machines");
        }

        (await InfoAsync(daemon, ct))["pools"]!.AsArray().Single()!["ready"]!.GetValue<int>().Should().Be(0);

        // A client's machine goes: the pool takes the room again.
        await daemon.Client.DeleteMachineAsync(first, ct);
        await WaitForReadyAsync(daemon, 1, ct);
        await daemon.Client.DeleteMachineAsync(second, ct);
        await WaitForReadyAsync(daemon, 2, ct);
    }

    [Fact(Timeout = 90_000)]
    public async Task After_a_restart_with_keep_the_pooled_machines_are_taken_back_and_handed_out()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var daemon = await StartAsync(poolSize: 2, ct, onShutdown: "keep");
        var waiting = await WaitForReadyAsync(daemon, 2, ct);
        var pids = waiting.SelectMany(id => SshdOf(id)).Order().ToList();

        (await daemon.SignalDaemonOnlyAsync(kill: false, ct)).Should().Be(0);
        await daemon.StartProcessAsync(ct);

        (await WaitForReadyAsync(daemon, 2, ct)).Should().BeEquivalentTo(waiting, "the same machines rejoin the pool");
        waiting.SelectMany(id => SshdOf(id)).Order().Should().Equal(pids, "nothing was launched again");
        var created = await daemon.Client.CreateAsync("warm", ct);
        waiting.Should().Contain(created["id"]!.GetValue<string>());
        created = await daemon.Client.BootAsync(created["id"]!.GetValue<string>(), ct);
        (await MachineSsh.RunAsync(created, _ssh.User, _ssh.ClientKeyPath, "echo taken back", ct)).Should().Be("taken back");
    }

    [Fact(Timeout = 90_000)]
    public async Task After_kill_9_a_pooled_machine_that_died_meanwhile_is_cleaned_up_the_live_one_rejoins_and_the_pool_refills()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var daemon = await StartAsync(poolSize: 2, ct, onShutdown: "keep");
        var waiting = await WaitForReadyAsync(daemon, 2, ct);
        await daemon.SignalDaemonOnlyAsync(kill: true, ct);
        var (victim, survivor) = (waiting[0], waiting[1]);
        Falk.Core.Unix.ProcessTree.Kill(SshdOf(victim).Single());

        await daemon.StartProcessAsync(ct);

        var pool = await WaitForReadyAsync(daemon, 2, ct);
        pool.Should().Contain(survivor).And.NotContain(victim);
        (await daemon.Client.ListAsync(ct)).Select(m => m!["id"]!.GetValue<string>()).Should().NotContain(victim, "its record was cleaned up");
        Directory.Exists(daemon.Directory.File($"state/machines/{victim}")).Should().BeFalse();
    }

    [Fact(Timeout = 90_000)]
    public async Task With_on_shutdown_destroy_the_pool_goes_with_the_daemon_and_a_create_with_an_idempotency_key_is_answered_once()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var daemon = await StartAsync(poolSize: 2, ct);
        var waiting = await WaitForReadyAsync(daemon, 2, ct);

        var answers = new List<JsonNode>();
        for (var i = 0; i < 2; i++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "v1/machines") { Content = System.Net.Http.Json.JsonContent.Create(new { template = "warm" }) };
            request.Headers.Add("Idempotency-Key", "job-7");
            using var response = await daemon.Client.SendAsync(request, ct);
            answers.Add(await response.JsonAsync(ct));
            response.StatusCode.Should().Be(HttpStatusCode.Created, answers[^1].ToJsonString());
        }

        answers.Select(a => a["id"]!.GetValue<string>()).Distinct().Should().ContainSingle().Which.Should().BeOneOf(waiting);

        await daemon.StopAsync(ct);
        ProcessTable.WithArgument(_ssh.ConfigPath).Should().BeEmpty("pooled machines are destroyed with the daemon");
        Directory.EnumerateDirectories(daemon.Directory.File("state/machines")).Should().BeEmpty();
    }

    /// <summary>
    /// The pids of the sshd listening for machine <paramref name="id"/>: sshd rewrites its environment (no
    /// FALK_MACHINE_ID to find it by), so by the port the API gave the machine (<see cref="Remember"/>).
    /// </summary>
    private IReadOnlyList<int> SshdOf(string id) =>
        _ports.TryGetValue(id, out var port) ? ProcessTable.WithArgument($"-p {port} -f {_ssh.ConfigPath}") : [];

    private readonly Dictionary<string, int> _ports = new(StringComparer.Ordinal);

    private string Remember(JsonNode machine)
    {
        var id = machine["id"]!.GetValue<string>();
        _ports[id] = machine["ssh"]!["port"]!.GetValue<int>();
        return id;
    }

    private Task<FalkDaemon> StartAsync(int poolSize, CancellationToken ct, string daemonExtra = "", string onShutdown = "destroy", int ports = 10) =>
        FalkDaemon.StartAsync($"""
            [warm]
            type = custom
            launch = {_ssh.LaunchCommand}
            ssh_user = {_ssh.User}
            ssh_host = 127.0.0.1
            ssh_known_host_key_file = {_ssh.HostPublicKeyPath}
            pool_size = {poolSize}

            [cold]
            type = custom
            launch = {_ssh.LaunchCommand}
            ssh_user = {_ssh.User}
            ssh_host = 127.0.0.1
            ssh_known_host_key_file = {_ssh.HostPublicKeyPath}
            """, ct, daemonExtra: daemonExtra, onShutdown: onShutdown, ports: ports);

    private static Task<JsonNode> InfoAsync(FalkDaemon daemon, CancellationToken ct) => daemon.Client.InfoAsync(ct);

    /// <summary>Waits until the pool of <c>warm</c> has <paramref name="count"/> machines ready; returns their ids.</summary>
    private async Task<IReadOnlyList<string>> WaitForReadyAsync(FalkDaemon daemon, int count, CancellationToken ct) =>
        (await daemon.Client.WaitForPoolAsync("warm", count, ct)).Select(Remember).ToList();
}
