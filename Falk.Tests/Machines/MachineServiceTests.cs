using System.Globalization;
using Falk.Core.Config;
using Falk.Core.Machines;
using Falk.Core.State;
using Falk.Tests.Fixtures;
using Microsoft.Extensions.Time.Testing;

namespace Falk.Tests.Machines;

/// <summary>The state machine with a scripted backend and SSH probe at the seams: exact interleavings, no timing luck.</summary>
public sealed class MachineServiceTests : IAsyncDisposable
{
    private static readonly Caller Alice = new(1000, IsAdmin: false);
    private static readonly Caller Bob = new(1001, IsAdmin: false);
    private readonly TempDirectory _state = new();
    private readonly ScriptedBackend _backend = new();
    private readonly ScriptedProbe _probe = new();
    private readonly FakeTimeProvider _time = new(DateTimeOffset.Parse("2026-01-01T00:00:00Z", CultureInfo.InvariantCulture));
    private readonly ScriptedMachines _machines;
    private readonly MachineStore _store;
    private readonly MachineService _service;

    public MachineServiceTests()
    {
        var template = new TemplateDefinition { Id = "t", Name = "t", Type = "scripted", SshUser = "u", SshHost = "127.0.0.1", BackendOptions = new object(), ManageSupported = true };
        var config = new FalkConfig("/x/falk.conf", new DaemonOptions { OnShutdown = ShutdownPolicy.Destroy, MaxMachines = 3, StateDirectory = _state.Path, VmPorts = new PortRange(100, 109) }, [template], []);
        _machines = new ScriptedMachines(config, _backend, _probe, _time);
        _store = _machines.Store;
        _service = _machines.Service;
    }

    public async ValueTask DisposeAsync()
    {
        await _machines.DisposeAsync();
        _state.Dispose();
    }

    private static readonly Caller Admin = new(0, IsAdmin: true);

    private Task<MachineView> CreateAsync(CancellationToken ct, Caller? caller = null, bool manage = false, string? key = null) =>
        _service.CreateAsync(new CreateMachineRequest("t", manage, new Dictionary<string, string>(), IdempotencyKey: key), caller ?? Alice, ct);

    private async Task<MachineEvent> FirstEventAsync(string type, CancellationToken ct)
    {
        await foreach (var item in _service.SubscribeAsync(Admin, 0, ct))
        {
            if (item.Type == type)
            {
                return item;
            }
        }

        throw new InvalidOperationException("the event stream ended");
    }

    [Fact(Timeout = 10_000)]
    public async Task A_crash_is_recorded_and_published_with_its_own_error_not_the_one_before()
    {
        var ct = TestContext.Current.CancellationToken;
        var machine = await CreateAsync(ct);
        await _service.BootAsync(machine.Id, Alice, waitForSsh: false, TimeSpan.FromSeconds(5), ct);

        _backend.Instances.Single().Exit(139);
        await _service.WaitUntilStoppedAsync(machine.Id, Alice, TimeSpan.FromSeconds(5), ct);

        _store.All().Single().LastError.Should().Contain("exit 139", "the record is what a restarted daemon serves");
        (await FirstEventAsync(MachineEventTypes.Failed, ct)).Detail.Should().Contain("exit 139");
    }

    [Fact(Timeout = 10_000)]
    public async Task A_launch_that_throws_an_unexpected_exception_ends_failed_not_booting_forever()
    {
        var ct = TestContext.Current.CancellationToken;
        var machine = await CreateAsync(ct);
        _backend.LaunchException = new InvalidOperationException("a bug in the backend");

        await FluentActions.Awaiting(() => _service.BootAsync(machine.Id, Alice, waitForSsh: false, TimeSpan.FromSeconds(5), ct))
            .Should().ThrowAsync<Exception>();

        var view = _service.Get(machine.Id, Alice);
        view.State.Should().Be(MachineState.Failed);
        view.LastError.Should().Contain("a bug in the backend");
        _store.All().Single().State.Should().Be("failed");
    }

    [Fact(Timeout = 10_000)]
    public async Task A_snapshot_overtaken_by_a_delete_answers_not_found()
    {
        var ct = TestContext.Current.CancellationToken;
        var machine = await CreateAsync(ct);
        var gate = new TaskCompletionSource();
        _backend.OperationGate = gate.Task;
        var first = _service.CreateSnapshotAsync(machine.Id, Alice, "first", ct);
        await _backend.AtOperationGate.Task;
        var queued = _service.CreateSnapshotAsync(machine.Id, Alice, "queued", ct);

        var delete = _service.DeleteAsync(machine.Id, Alice, ct);
        gate.TrySetResult();

        await FluentActions.Awaiting(() => queued).Should().ThrowAsync<MachineNotFoundException>();
        await delete;
        await FluentActions.Awaiting(() => first).Should().ThrowAsync<MachineNotFoundException>();
        _service.List(Alice).Should().BeEmpty();
    }

    [Fact(Timeout = 10_000)]
    public async Task A_commit_overtaken_by_a_delete_answers_not_found()
    {
        var ct = TestContext.Current.CancellationToken;
        var machine = await CreateAsync(ct, Admin, manage: true);
        _backend.OperationGate = new TaskCompletionSource().Task;
        var commit = _service.CommitAsync(machine.Id, Admin, TimeSpan.FromSeconds(1), ct);
        await _backend.AtOperationGate.Task;

        await _service.DeleteAsync(machine.Id, Admin, ct);

        await FluentActions.Awaiting(() => commit).Should().ThrowAsync<MachineNotFoundException>();
        _service.List(Admin).Should().BeEmpty();
    }

    [Fact(Timeout = 10_000)]
    public async Task A_uid_that_is_not_an_admin_gets_three_quarters_of_the_machines_by_default_and_leaves_room_for_others()
    {
        var ct = TestContext.Current.CancellationToken;
        await CreateAsync(ct);
        await CreateAsync(ct);

        (await FluentActions.Awaiting(() => CreateAsync(ct)).Should().ThrowAsync<CapacityExhaustedException>())
            .Which.Message.Should().Contain("max_machines_per_owner: 2");
        (await CreateAsync(ct, Bob)).OwnerUid.Should().Be(Bob.Uid, "the last of max_machines = 3 is left for another uid");
    }

    [Fact(Timeout = 10_000)]
    public async Task A_machine_has_at_most_max_snapshots_per_machine_and_one_more_is_a_clear_conflict()
    {
        var ct = TestContext.Current.CancellationToken;
        var machine = await CreateAsync(ct);
        for (var i = 0; i < 16; i++)
        {
            await _service.CreateSnapshotAsync(machine.Id, Alice, $"s{i}", ct);
        }

        (await FluentActions.Awaiting(() => _service.CreateSnapshotAsync(machine.Id, Alice, "one-too-many", ct)).Should().ThrowAsync<SnapshotLimitException>())
            .Which.Message.Should().Contain("16 snapshots (max_snapshots_per_machine)");
        (await _service.ListSnapshotsAsync(machine.Id, Alice, ct)).Should().HaveCount(16);
        await _service.DeleteSnapshotAsync(machine.Id, Alice, "s0", ct);
        await _service.CreateSnapshotAsync(machine.Id, Alice, "room-again", ct);
    }

    [Fact(Timeout = 10_000)]
    public async Task An_idempotency_key_is_forgotten_when_its_machine_is_destroyed()
    {
        var ct = TestContext.Current.CancellationToken;
        for (var job = 0; job < 5; job++)
        {
            var machine = await CreateAsync(ct, key: $"job-{job}");
            (await CreateAsync(ct, key: $"job-{job}")).Id.Should().Be(machine.Id, "a retry gets the same machine");
            await _service.DeleteAsync(machine.Id, Alice, ct);
        }

        _service.IdempotencyKeysHeld.Should().Be(0);
        var again = await CreateAsync(ct, key: "job-0");
        _service.IdempotencyKeysHeld.Should().Be(1);
        _service.List(Alice).Should().ContainSingle().Which.Id.Should().Be(again.Id);
    }

    [Fact(Timeout = 10_000)]
    public async Task Of_two_concurrent_boots_one_wins_and_the_other_is_a_conflict_naming_the_state()
    {
        var ct = TestContext.Current.CancellationToken;
        var machine = await CreateAsync(ct);
        var launchGate = new TaskCompletionSource();
        _backend.LaunchGate = launchGate.Task;

        var first = _service.BootAsync(machine.Id, Alice, waitForSsh: false, TimeSpan.FromSeconds(5), ct);
        var second = () => _service.BootAsync(machine.Id, Alice, waitForSsh: false, TimeSpan.FromSeconds(5), ct);

        (await second.Should().ThrowAsync<MachineStateConflictException>()).Which.State.Should().Be(MachineState.Booting);
        launchGate.SetResult();
        (await first).State.Should().Be(MachineState.Running);
        _backend.Instances.Single().Launches.Should().Be(1);
    }

    [Fact(Timeout = 10_000)]
    public async Task A_delete_during_a_boot_cancels_it_and_cleans_everything_up()
    {
        var ct = TestContext.Current.CancellationToken;
        var machine = await CreateAsync(ct);
        _probe.Ready = false;
        var boot = _service.BootAsync(machine.Id, Alice, waitForSsh: true, TimeSpan.FromSeconds(30), ct);
        await _probe.Probed.Task;

        await _service.DeleteAsync(machine.Id, Alice, ct);

        (await boot.Awaiting(b => b).Should().ThrowAsync<MachineStateConflictException>()).Which.Message.Should().Contain("deleted while booting");
        var instance = _backend.Instances.Single();
        instance.Killed.Should().BeTrue();
        instance.CleanedUp.Should().Be(1);
        _service.List(Alice).Should().BeEmpty();
        _service.Capacity.Should().Be(new CapacityView(0, 3, 0, 10));
        Directory.EnumerateFileSystemEntries(Path.Combine(_state.Path, "machines")).Should().BeEmpty();
    }

    [Fact(Timeout = 10_000)]
    public async Task A_failed_prepare_gives_back_the_port_and_the_machine_slot()
    {
        var ct = TestContext.Current.CancellationToken;
        _backend.FailPrepare = true;

        await FluentActions.Awaiting(() => CreateAsync(ct)).Should().ThrowAsync<BackendOperationException>();

        _service.Capacity.Should().Be(new CapacityView(0, 3, 0, 10));
        Directory.EnumerateFileSystemEntries(Path.Combine(_state.Path, "machines")).Should().BeEmpty();
    }

    [Fact(Timeout = 10_000)]
    public async Task Past_max_machines_create_is_refused_with_a_retry_hint()
    {
        var ct = TestContext.Current.CancellationToken;
        await CreateAsync(ct);
        await CreateAsync(ct);
        await CreateAsync(ct, Bob);

        (await FluentActions.Awaiting(() => CreateAsync(ct, Bob)).Should().ThrowAsync<CapacityExhaustedException>()).Which.RetryAfter.Should().BePositive();
    }

    [Fact(Timeout = 10_000)]
    public async Task A_machine_that_ends_by_itself_is_stopped_when_clean_and_failed_otherwise()
    {
        var ct = TestContext.Current.CancellationToken;
        var clean = await CreateAsync(ct);
        var crashing = await CreateAsync(ct);
        await _service.BootAsync(clean.Id, Alice, false, TimeSpan.FromSeconds(5), ct);
        await _service.BootAsync(crashing.Id, Alice, false, TimeSpan.FromSeconds(5), ct);

        _backend.Instances[0].Exit(0);
        _backend.Instances[1].Exit(139);

        (await _service.WaitUntilStoppedAsync(clean.Id, Alice, TimeSpan.FromSeconds(5), ct)).State.Should().Be(MachineState.Stopped);
        var failed = await _service.WaitUntilStoppedAsync(crashing.Id, Alice, TimeSpan.FromSeconds(5), ct);
        failed.State.Should().Be(MachineState.Failed);
        failed.LastError.Should().Contain("exit 139");
    }

    [Fact(Timeout = 10_000)]
    public async Task Machines_belong_to_their_owner_and_admins_see_all()
    {
        var ct = TestContext.Current.CancellationToken;
        var alices = await CreateAsync(ct, Alice);
        await CreateAsync(ct, Bob);

        _service.List(Alice).Should().ContainSingle().Which.Id.Should().Be(alices.Id);
        _service.List(new Caller(0, IsAdmin: true)).Should().HaveCount(2);
        FluentActions.Invoking(() => _service.Get(alices.Id, Bob)).Should().Throw<MachineNotFoundException>();
        await _service.DeleteAsync(alices.Id, Bob, ct);
        _service.Get(alices.Id, Alice).State.Should().Be(MachineState.Prepared, "Bob cannot delete Alice's machine");
    }

    [Fact(Timeout = 10_000)]
    public async Task Management_mode_is_for_admins_only()
    {
        var ct = TestContext.Current.CancellationToken;
        await FluentActions.Awaiting(() => CreateAsync(ct, Alice, manage: true)).Should().ThrowAsync<AccessDeniedException>();
        (await CreateAsync(ct, new Caller(0, true), manage: true)).Manage.Should().BeTrue();
    }

    [Fact(Timeout = 10_000)]
    public async Task A_stop_from_a_state_that_cannot_stop_is_a_conflict_and_changes_nothing()
    {
        var ct = TestContext.Current.CancellationToken;
        var machine = await CreateAsync(ct);

        (await FluentActions.Awaiting(() => _service.StopAsync(machine.Id, Alice, TimeSpan.FromSeconds(1), ct))
            .Should().ThrowAsync<MachineStateConflictException>()).Which.State.Should().Be(MachineState.Prepared);
        _service.Get(machine.Id, Alice).State.Should().Be(MachineState.Prepared);
        _backend.Instances.Single().Stops.Should().Be(0);
    }
}
