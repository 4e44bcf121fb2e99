using System.Globalization;
using Falk.Core.Config;
using Falk.Core.Machines;
using Falk.Core.Waiting;
using Falk.Tests.Fixtures;
using Microsoft.Extensions.Time.Testing;

namespace Falk.Tests.Machines;

/// <summary>Leases, idempotency keys, restart recovery, snapshots and the management rule on a scripted backend and a clock the test moves.</summary>
public sealed class LeaseAndRecoveryTests : IAsyncDisposable
{
    private static readonly Caller Alice = new(1000, IsAdmin: false);
    private static readonly Caller Admin = new(0, IsAdmin: true);
    private readonly TempDirectory _state = new();
    private readonly ScriptedBackend _backend = new();
    private readonly ScriptedProbe _probe = new();
    private readonly FakeTimeProvider _time = new(DateTimeOffset.Parse("2026-01-01T00:00:00Z", CultureInfo.InvariantCulture));
    private readonly List<ScriptedMachines> _daemons = [];

    public async ValueTask DisposeAsync()
    {
        foreach (var daemon in _daemons)
        {
            await daemon.DisposeAsync();
        }

        _state.Dispose();
    }

    private static TemplateDefinition Template(string id, string? name = null) =>
        new() { Id = id, Name = name ?? id, Type = "scripted", SshUser = "u", SshHost = "127.0.0.1", BackendOptions = new object(), ManageSupported = true };

    private ScriptedMachines Start(ShutdownPolicy onShutdown = ShutdownPolicy.Destroy, IReadOnlyList<TemplateDefinition>? templates = null)
    {
        var config = new FalkConfig("/x/falk.conf", new DaemonOptions { OnShutdown = onShutdown, MaxMachines = 5, StateDirectory = _state.Path, VmPorts = new PortRange(100, 109) },
            templates ?? [Template("t"), Template("t2")], []);
        var daemon = new ScriptedMachines(config, _backend, _probe, _time);
        _daemons.Add(daemon);
        return daemon;
    }

    private static Task<MachineView> CreateAsync(ScriptedMachines daemon, CancellationToken ct, int? lease = null, string? key = null, string template = "t", Caller? caller = null) =>
        daemon.Service.CreateAsync(new CreateMachineRequest(template, caller == Admin, new Dictionary<string, string>(), lease, key), caller ?? Alice, ct);

    [Fact(Timeout = 10_000)]
    public async Task A_machine_whose_lease_ran_out_is_destroyed_and_a_renewed_one_stays()
    {
        var ct = TestContext.Current.CancellationToken;
        var daemon = Start();
        var forgotten = await CreateAsync(daemon, ct, lease: 60);
        var renewed = await CreateAsync(daemon, ct, lease: 60);

        _time.Advance(TimeSpan.FromSeconds(30));
        daemon.Service.RenewLease(renewed.Id, Alice, 60).LeaseExpiresAt.Should().Be(_time.GetUtcNow().AddSeconds(60));
        _time.Advance(TimeSpan.FromSeconds(29));
        (await daemon.Leases.DestroyExpiredAsync(ct)).Should().Be(0, "no lease has run out yet");
        _time.Advance(TimeSpan.FromSeconds(1));

        (await daemon.Leases.DestroyExpiredAsync(ct)).Should().Be(1);
        daemon.Service.List(Alice).Should().ContainSingle().Which.Id.Should().Be(renewed.Id);
        _backend.Instances.Single(i => i.Spec.MachineId == forgotten.Id).CleanedUp.Should().Be(1);
        daemon.Store.All().Should().ContainSingle().Which.Id.Should().Be(renewed.Id);
    }

    [Fact(Timeout = 10_000)]
    public async Task A_slow_delete_holds_up_no_other_machines_expiry_and_a_renewal_meanwhile_is_honoured()
    {
        var ct = TestContext.Current.CancellationToken;
        var daemon = Start();
        var slow = await CreateAsync(daemon, ct, lease: 10);
        var quick = await CreateAsync(daemon, ct, lease: 20);
        var renewed = await CreateAsync(daemon, ct, lease: 20);
        var slowCleanup = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _backend.CleanupGate = id =>
        {
            if (id != slow.Id)
            {
                return Task.CompletedTask;
            }

            slowCleanup.TrySetResult();
            return release.Task;
        };
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var destroyed = FirstDestroyedAsync(daemon, stop.Token);
        await daemon.Reaper.StartAsync(ct);
        try
        {
            // The slow machine's lease runs out: its delete begins and hangs in its cleanup.
            await StepClockUntilAsync(slowCleanup.Task, ct);

            // While it hangs, a renewal is answered and kept, and the next lease to run out is enforced all the same.
            daemon.Service.RenewLease(renewed.Id, Alice, 60);
            await StepClockUntilAsync(destroyed, ct);
            (await destroyed).Should().Be(quick.Id, "the slow delete still hangs");
            daemon.Service.List(Alice).Select(m => m.Id).Should().BeEquivalentTo([slow.Id, renewed.Id]);

            release.TrySetResult();
            await Wait.UntilAsync(
                _ => Task.FromResult(daemon.Service.List(Alice).Count == 1 ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>("slow machine still listed")),
                TimeSpan.FromMilliseconds(10), TimeSpan.FromSeconds(5), "the slow delete to finish", ct);
            daemon.Service.List(Alice).Should().ContainSingle().Which.Id.Should().Be(renewed.Id);
        }
        finally
        {
            release.TrySetResult();
            await stop.CancelAsync();
            await daemon.Reaper.StopAsync(CancellationToken.None);
        }
    }

    /// <summary>Moves the clock a second at a time (the reaper's round) until <paramref name="done"/> completes, for at most a minute of it.</summary>
    private async Task StepClockUntilAsync(Task done, CancellationToken ct)
    {
        for (var second = 0; second < 60 && !done.IsCompleted; second++)
        {
            _time.Advance(TimeSpan.FromSeconds(1));
            await Task.WhenAny(done, Task.Delay(TimeSpan.FromMilliseconds(100), ct));
        }

        await done.WaitAsync(TimeSpan.FromSeconds(1), ct);
    }

    private static async Task<string> FirstDestroyedAsync(ScriptedMachines daemon, CancellationToken ct)
    {
        await foreach (var item in daemon.Service.SubscribeAsync(Admin, null, ct))
        {
            if (item.Type == MachineEventTypes.Destroyed)
            {
                return item.MachineId;
            }
        }

        throw new InvalidOperationException("the event stream ended");
    }

    [Fact(Timeout = 10_000)]
    public async Task A_machine_taken_back_after_a_restart_keeps_its_lease_state_and_idempotency_key_until_the_lease_ends()
    {
        var ct = TestContext.Current.CancellationToken;
        var first = Start(ShutdownPolicy.Keep);
        var made = await CreateAsync(first, ct, lease: 100, key: "job-1");
        await first.Service.BootAsync(made.Id, Alice, waitForSsh: false, TimeSpan.FromSeconds(5), ct);
        await first.StopAsync();
        _backend.Alive[made.Id] = true;

        var second = Start();
        await second.Recovery.StartAsync(ct);

        var back = second.Service.Get(made.Id, Alice);
        back.State.Should().Be(MachineState.Running);
        back.LeaseExpiresAt.Should().Be(made.LeaseExpiresAt);
        (await CreateAsync(second, ct, key: "job-1")).Id.Should().Be(made.Id, "the key still names the machine");
        _time.Advance(TimeSpan.FromSeconds(100));
        (await second.Leases.DestroyExpiredAsync(ct)).Should().Be(1);
        second.Service.List(Alice).Should().BeEmpty();
        second.Service.IdempotencyKeysHeld.Should().Be(0);
        second.Store.All().Should().BeEmpty();
    }

    [Fact(Timeout = 10_000)]
    public async Task A_machine_gone_while_the_daemon_was_down_is_cleaned_up_and_its_key_is_free()
    {
        var ct = TestContext.Current.CancellationToken;
        var first = Start(ShutdownPolicy.Keep);
        var made = await CreateAsync(first, ct, key: "job-1");
        await first.StopAsync();

        var second = Start();
        await second.Recovery.StartAsync(ct);

        second.Service.List(Alice).Should().BeEmpty();
        second.Store.All().Should().BeEmpty();
        _backend.OrphanSweeps.Last().Should().BeEmpty();
        (await CreateAsync(second, ct, key: "job-1")).Id.Should().NotBe(made.Id);
    }

    [Fact(Timeout = 10_000)]
    public async Task Two_templates_on_one_image_share_the_one_management_machine()
    {
        var ct = TestContext.Current.CancellationToken;
        _backend.SharedImage = "base.qcow2";
        var daemon = Start();
        var managed = await CreateAsync(daemon, ct, template: "t", caller: Admin);

        (await FluentActions.Awaiting(() => CreateAsync(daemon, ct, template: "t2", caller: Admin)).Should().ThrowAsync<ManagementConflictException>())
            .Which.Message.Should().Contain("shares its image with template 't'").And.Contain(managed.Id);
        await daemon.Service.DeleteAsync(managed.Id, Admin, ct);
        (await CreateAsync(daemon, ct, template: "t2", caller: Admin)).Manage.Should().BeTrue();
    }

    [Fact(Timeout = 10_000)]
    public async Task A_pool_name_goes_on_to_a_section_whose_management_claim_is_free_and_its_record_names_the_section()
    {
        var ct = TestContext.Current.CancellationToken;
        var daemon = Start(ShutdownPolicy.Keep, [Template("a", "pool"), Template("b", "pool")]);
        var first = await CreateAsync(daemon, ct, template: "pool", caller: Admin);
        var second = await CreateAsync(daemon, ct, template: "pool", caller: Admin);

        daemon.Store.All().Select(r => (r.Id, r.Template)).Should().BeEquivalentTo([(first.Id, "a"), (second.Id, "b")],
            "the first section's claim is taken, so the name picks the other one; records name the section");
        (await FluentActions.Awaiting(() => CreateAsync(daemon, ct, template: "pool", caller: Admin)).Should().ThrowAsync<ManagementConflictException>())
            .Which.Message.Should().Contain("template 'b'").And.Contain(second.Id);
        await daemon.StopAsync();
        _backend.Alive[first.Id] = _backend.Alive[second.Id] = false;

        var restarted = Start(templates: [Template("a", "pool"), Template("b", "pool")]);
        await restarted.Recovery.StartAsync(ct);
        restarted.Service.List(Admin).Should().HaveCount(2);
        // Both sections' claims are back with their machines.
        await FluentActions.Awaiting(() => CreateAsync(restarted, ct, template: "pool", caller: Admin)).Should().ThrowAsync<ManagementConflictException>();
        await restarted.Service.DeleteAsync(second.Id, Admin, ct);
        (await CreateAsync(restarted, ct, template: "pool", caller: Admin)).Manage.Should().BeTrue();
        restarted.Store.All().Should().Contain(r => r.Template == "b" && r.Id != second.Id);
    }

    [Fact(Timeout = 10_000)]
    public async Task A_pool_whose_sections_share_an_image_has_one_management_machine()
    {
        var ct = TestContext.Current.CancellationToken;
        _backend.SharedImage = "base.qcow2";
        var daemon = Start(templates: [Template("a", "pool"), Template("b", "pool")]);
        var managed = await CreateAsync(daemon, ct, template: "pool", caller: Admin);

        (await FluentActions.Awaiting(() => CreateAsync(daemon, ct, template: "pool", caller: Admin)).Should().ThrowAsync<ManagementConflictException>())
            .Which.Message.Should().Contain("template 'a' already has a management machine").And.Contain(managed.Id,
                "section b shares a's image, so the pool ends at a's own refusal");
        (await CreateAsync(daemon, ct, template: "pool")).Manage.Should().BeFalse("machines that do not manage still have room");
    }

    [Fact(Timeout = 10_000)]
    public async Task A_deleted_snapshot_is_no_longer_listed_and_an_unknown_one_is_not_found()
    {
        var ct = TestContext.Current.CancellationToken;
        var daemon = Start();
        var machine = await CreateAsync(daemon, ct);
        await daemon.Service.CreateSnapshotAsync(machine.Id, Alice, "a", ct);
        await daemon.Service.CreateSnapshotAsync(machine.Id, Alice, "b", ct);

        await daemon.Service.DeleteSnapshotAsync(machine.Id, Alice, "a", ct);

        (await daemon.Service.ListSnapshotsAsync(machine.Id, Alice, ct)).Select(s => s.Name).Should().Equal("b");
        await FluentActions.Awaiting(() => daemon.Service.DeleteSnapshotAsync(machine.Id, Alice, "a", ct)).Should().ThrowAsync<SnapshotNotFoundException>();
    }
}
