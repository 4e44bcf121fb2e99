using System.Net;
using Falk.Core.Processes;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Backends.Podman;

/// <summary>A podman daemon that stops or dies and starts again: containers are taken back or removed, never leaked.</summary>
public sealed class PodmanRecoveryTests(PodmanFixture fixture) : IClassFixture<PodmanFixture>
{
    [Fact(Timeout = 240_000)]
    public async Task After_SIGTERM_with_keep_the_container_runs_on_and_the_next_start_takes_it_back_with_its_id_port_lease_and_snapshots()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var podman = await fixture.StartDaemonAsync(ct, onShutdown: "keep");
        var created = await podman.Client.CreateAsync("sshd", ct);
        var id = created["id"]!.GetValue<string>();
        var running = await podman.Client.BootAsync(id, ct);
        var prepared = (await podman.Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>();
        using (var snapshot = await podman.Client.PostJsonAsync($"v1/machines/{id}/snapshots", new { name = "before-restart" }, ct))
        {
            snapshot.StatusCode.Should().Be(HttpStatusCode.Created, await snapshot.Content.ReadAsStringAsync(ct));
        }

        var containerBefore = await PodmanCli.RunAsync(["ps", "-q", "--no-trunc", "--filter", "label=" + podman.InstanceLabel], ct);

        (await podman.Daemon.SignalDaemonOnlyAsync(kill: false, ct)).Should().Be(0);
        (await PodmanCli.RunAsync(["ps", "-q", "--no-trunc", "--filter", "label=" + podman.InstanceLabel], ct))
            .Should().Equal(containerBefore, "keep leaves the machine's container running");

        await podman.Daemon.StartProcessAsync(ct);
        var machines = await podman.Client.ListAsync(ct);

        machines.Should().HaveCount(2);
        var back = machines.Single(m => m!["id"]!.GetValue<string>() == id)!;
        back["state"]!.GetValue<string>().Should().Be("running");
        back["ssh"]!["port"]!.GetValue<int>().Should().Be(created["ssh"]!["port"]!.GetValue<int>());
        back["lease_expires_at"]!.GetValue<DateTimeOffset>().Should().Be(created["lease_expires_at"]!.GetValue<DateTimeOffset>());
        back["ssh"]!["known_host_key"]!.GetValue<string>().Should().Be(created["ssh"]!["known_host_key"]!.GetValue<string>(), "the machine keeps the key made for it");
        back["ssh"]!["host_key_source"]!.GetValue<string>().Should().Be("machine");
        machines.Single(m => m!["id"]!.GetValue<string>() == prepared)!["state"]!.GetValue<string>().Should().Be("prepared");
        (await PodmanSsh.RunAsync(back, fixture.Image, "id -un", ct)).Should().Be("chantal", "the container kept serving SSH on its port");
        using (var list = await podman.Client.GetAsync($"v1/machines/{id}/snapshots", ct))
        {
            (await list.JsonAsync(ct)).AsArray().Select(s => s!["name"]!.GetValue<string>()).Should().Equal("before-restart");
        }

        // The exit watch was set up again: a stop outside Falk is seen.
        var waiting = podman.Client.PostAsync($"v1/machines/{id}/wait?condition=stopped&timeout=60", null, ct);
        await PodmanCli.RunAsync(["stop", "-t", "5", id], ct);
        using (var waited = await waiting)
        {
            (await waited.JsonAsync(ct))["state"]!.GetValue<string>().Should().Be("stopped");
        }

        (await podman.Client.BootAsync(id, ct))["ssh"]!["port"]!.GetValue<int>().Should().Be(running["ssh"]!["port"]!.GetValue<int>());
        await podman.Client.DeleteMachineAsync(id, ct);
        await podman.Client.DeleteMachineAsync(prepared, ct);

        (await PodmanCli.ContainersAsync(podman.InstanceLabel, ct)).Should().BeEmpty("delete removes the containers taken back");
        (await PodmanCli.ImagesAsync(podman.InstanceLabel, ct)).Should().BeEmpty("delete removes the snapshot made before the restart");
    }

    [Fact(Timeout = 600_000)]
    public async Task Killing_the_daemon_at_random_points_of_10_lifecycles_never_leaks_a_container_or_a_port()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var podman = await fixture.StartDaemonAsync(ct, onShutdown: "keep", ports: 20);

        // A lifecycle takes one to two seconds: the kill lands in create, in boot, in delete or after it.
        var (_, kills) = await KillChaos.RunAsync(podman.Daemon, new ChaosPlan("sshd", Cycles: 10, KillsIn: cycle => cycle % 4 != 3, LatestKill: TimeSpan.FromMilliseconds(2500), MinimumCompleted: 2,
            AssertBackendOwnsOnlyAsync: async (ids, because, token) => (await ContainerNamesAsync(podman.InstanceLabel, token)).Should().BeSubsetOf(ids, because)), ct);

        kills.Should().Be(8);
        (await PodmanCli.ContainersAsync(podman.InstanceLabel, ct)).Should().BeEmpty();
    }

    [Fact(Timeout = 240_000)]
    public async Task A_container_and_a_snapshot_image_with_this_daemons_labels_but_no_record_are_removed_at_start_and_others_are_not()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var podman = await fixture.StartDaemonAsync(ct, onShutdown: "keep");
        var recorded = (await podman.Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>();
        (await podman.Daemon.SignalDaemonOnlyAsync(kill: false, ct)).Should().Be(0);

        // While the daemon is down, containers appear: one with its marks but no record, one of another daemon.
        var suffix = Guid.NewGuid().ToString("N")[..8];
        var orphan = $"morphan{suffix}";
        var foreign = $"mforeign{suffix}";
        var snapshotReference = $"localhost/falk/{podman.Instance}/machines/{orphan}:s-left";
        try
        {
            await PodmanCli.RunAsync(["run", "-d", "--name", orphan,
                "--label", podman.InstanceLabel, "--label", $"org.falk.machine={orphan}", fixture.Image.Reference], ct);
            await PodmanCli.RunAsync(["commit",
                "--change", $"LABEL {podman.InstanceLabel}", "--change", $"LABEL org.falk.machine={orphan}",
                "--change", "LABEL org.falk.image-kind=snapshot", "--change", "LABEL org.falk.snapshot=left",
                orphan, snapshotReference], ct);
            await PodmanCli.RunAsync(["create", "--name", foreign,
                "--label", "org.falk.instance=someotherdaemon", "--label", $"org.falk.machine={foreign}", fixture.Image.Reference], ct);

            await podman.Daemon.StartProcessAsync(ct);

            (await podman.Client.ListAsync(ct)).Select(m => m!["id"]!.GetValue<string>()).Should().Equal(recorded);
            (await ContainerNamesAsync(podman.InstanceLabel, ct)).Should().Equal([recorded], "the unrecorded container is removed, the recorded one kept");
            (await PodmanCli.RunAsync(["images", "-q", "--filter", $"reference={snapshotReference}"], ct)).Should().BeEmpty("the unrecorded machine's snapshot is removed");
            (await PodmanCli.RunAsync(["ps", "-a", "-q", "--filter", $"name=^{foreign}$"], ct)).Should().ContainSingle("another daemon's container is not touched");
            podman.Daemon.Output.Should().Contain($"Machine {orphan}: container").And.Contain("belongs to no recorded machine");

            await podman.Client.DeleteMachineAsync(recorded, ct);
            (await PodmanCli.ContainersAsync(podman.InstanceLabel, ct)).Should().BeEmpty();
        }
        finally
        {
            await RemoveQuietlyAsync(["rm", "-f", orphan, foreign]);
            await RemoveQuietlyAsync(["rmi", "-f", snapshotReference]);
        }
    }

    /// <summary>The names (machine ids) of every container carrying <paramref name="label"/>.</summary>
    private static Task<IReadOnlyList<string>> ContainerNamesAsync(string label, CancellationToken ct) =>
        PodmanCli.RunAsync(["ps", "-a", "--filter", $"label={label}", "--format", "{{.Names}}"], ct);

    private static async Task RemoveQuietlyAsync(IReadOnlyList<string> args)
    {
        try
        {
            await PodmanCli.RunAsync(args, CancellationToken.None);
        }
        catch (ProcessFailedException)
        {
            // Already gone.
        }
    }
}
