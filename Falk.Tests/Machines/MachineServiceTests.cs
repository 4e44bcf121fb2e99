using Falk.Core.Config;
using Falk.Core.Machines;
using Falk.Core.Ssh;
using Falk.Core.State;
using Falk.Tests.Fixtures;
using Microsoft.Extensions.Logging.Abstractions;

namespace Falk.Tests.Machines;

/// <summary>The state machine with a scripted backend and SSH probe at the seams: exact interleavings, no timing luck.</summary>
public sealed class MachineServiceTests : IAsyncDisposable
{
    private static readonly Caller Alice = new(1000, IsAdmin: false);
    private static readonly Caller Bob = new(1001, IsAdmin: false);
    private readonly TempDirectory _state = new();
    private readonly ScriptedBackend _backend = new();
    private readonly ScriptedProbe _probe = new();
    private readonly MachineStore _store;
    private readonly MachineService _service;

    public MachineServiceTests()
    {
        var template = new TemplateDefinition { Id = "t", Name = "t", Type = "scripted", SshUser = "u", SshHost = "127.0.0.1", BackendOptions = new object(), ManageSupported = true };
        var config = new FalkConfig("/x/falk.conf", new DaemonOptions { OnShutdown = ShutdownPolicy.Destroy, MaxMachines = 3, StateDirectory = _state.Path, VmPorts = new PortRange(100, 109) }, [template], []);
        _store = new MachineStore(config);
        _service = new MachineService(config, [_backend], new PortAllocator(config.Daemon.VmPorts, _ => true),
            new SshReadiness(_probe, TimeProvider.System), new MachineEvents(TimeProvider.System), _store, TimeProvider.System, NullLogger<MachineService>.Instance);
    }

    public async ValueTask DisposeAsync()
    {
        await _service.DisposeAsync();
        _store.Dispose();
        _state.Dispose();
    }

    private Task<MachineView> CreateAsync(CancellationToken ct, Caller? caller = null, bool manage = false) =>
        _service.CreateAsync(new CreateMachineRequest("t", manage, new Dictionary<string, string>()), caller ?? Alice, ct);

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
        await CreateAsync(ct);

        (await FluentActions.Awaiting(() => CreateAsync(ct)).Should().ThrowAsync<CapacityExhaustedException>()).Which.RetryAfter.Should().BePositive();
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

    private sealed class ScriptedBackend : IMachineBackend
    {
        public List<ScriptedInstance> Instances { get; } = [];

        public Task LaunchGate { get; set; } = Task.CompletedTask;

        public bool FailPrepare { get; set; }

        public string Type => "scripted";

        public Task<ReattachedMachine?> ReattachAsync(MachineSpec spec, string? handle, MachineState? recordedState, CancellationToken cancellationToken) =>
            Task.FromResult<ReattachedMachine?>(null);

        public Task RemoveOrphansAsync(IReadOnlySet<string> knownMachineIds, CancellationToken cancellationToken) => Task.CompletedTask;

        public Task<IMachineInstance> PrepareAsync(MachineSpec spec, CancellationToken cancellationToken)
        {
            if (FailPrepare)
            {
                throw new BackendOperationException("prepare failed");
            }

            var instance = new ScriptedInstance(this);
            lock (Instances)
            {
                Instances.Add(instance);
            }

            return Task.FromResult<IMachineInstance>(instance);
        }
    }

    private sealed class ScriptedInstance(ScriptedBackend backend) : IMachineInstance
    {
        private TaskCompletionSource<MachineExit> _exit = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public int Launches { get; private set; }

        public int Stops { get; private set; }

        public bool Killed { get; private set; }

        public int CleanedUp { get; private set; }

        public Task<MachineExit>? Exited { get; private set; }

        public string? Handle => null;

        public async Task LaunchAsync(CancellationToken cancellationToken)
        {
            await backend.LaunchGate.WaitAsync(cancellationToken);
            Launches++;
            _exit = new(TaskCreationOptions.RunContinuationsAsynchronously);
            Exited = _exit.Task;
        }

        public void Exit(int code) => _exit.TrySetResult(new MachineExit(code, $"exit {code}", "tail"));

        public Task StopAsync(TimeSpan grace, CancellationToken cancellationToken)
        {
            Stops++;
            Exit(0);
            return Task.CompletedTask;
        }

        public Task KillAsync(CancellationToken cancellationToken)
        {
            Killed = true;
            Exit(137);
            return Task.CompletedTask;
        }

        public Task CleanupAsync(CancellationToken cancellationToken)
        {
            CleanedUp++;
            return Task.CompletedTask;
        }

        public string OutputTail() => "tail";

        public Task CopyConsoleAsync(Stream destination, bool follow, CancellationToken cancellationToken) => Task.CompletedTask;
    }

    private sealed class ScriptedProbe : ISshProbe
    {
        public bool Ready { get; set; } = true;

        public TaskCompletionSource Probed { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task<SshProbeResult> ProbeAsync(SshEndpoint endpoint, IReadOnlyList<HostKey> pinnedKeys, TimeSpan attemptTimeout, CancellationToken cancellationToken)
        {
            Probed.TrySetResult();
            return Task.FromResult(Ready
                ? new SshProbeResult(true, new HostKey("ssh-ed25519", [1, 2, 3]), false, null)
                : new SshProbeResult(false, null, false, "connection refused"));
        }
    }
}
