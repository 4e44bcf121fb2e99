using Falk.Core.Config;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Machines;

/// <summary>One template's warm pool as <c>/v1/info</c> shows it.</summary>
/// <param name="Size">The template's <c>pool_size</c>.</param>
/// <param name="Ready">Machines booted, SSH-verified and waiting to be handed out.</param>
/// <param name="Filling">Machines being made for the pool (prepared, booting, or checked after a restart).</param>
public sealed record WarmPoolView(string Template, int Size, int Ready, int Filling);

/// <summary>A machine the filler may make for a pool: the capacity it holds, and the image generation it starts from.</summary>
internal sealed record PoolFill(TemplateDefinition Template, string MachineId, AdmissionReservation Reservation, long Generation);

/// <summary>
/// The warm pools (template key <c>pool_size</c>): per template, machines booted and SSH-verified ahead of demand, owned
/// by the daemon (<see cref="Caller.Daemon"/>), which a create takes at once. Not to be confused with
/// <see cref="TemplatePool"/>, the sections that share a name. This class keeps the books under one lock; the
/// <see cref="WarmPoolFiller"/> makes, checks and destroys the machines.
/// <list type="bullet">
/// <item>A pooled machine is an ordinary machine in the table: it counts against every limit and holds its port.</item>
/// <item>Its record says what it is: owner <see cref="Caller.Daemon"/>, and a lease of <see cref="ConfirmedLease"/> once
/// it is verified and of the current image. Anything else (a fill cut short, a machine made stale by a commit) is
/// destroyed when a restarted daemon finds it, never handed out.</item>
/// <item>A management commit makes every machine of the image's pools stale before the commit answers
/// (<see cref="MakeStale"/>): they are taken out of the pools, their lease is ended, and fills that started before the
/// commit are not taken in.</item>
/// <item>Creates without a pooled machine (<see cref="EnterCold"/>) go first: no fill starts while one runs, and a
/// create that finds no capacity left may evict a pooled machine (<see cref="TakeForEviction"/>).</item>
/// </list>
/// </summary>
public sealed class WarmPools
{
    /// <summary>The lease of a machine waiting, verified, in a pool: none until it is handed out.</summary>
    public static readonly DateTimeOffset ConfirmedLease = DateTimeOffset.MaxValue;

    /// <summary>The longest a fill (prepare, boot, SSH) may take before the machine is given up and made again.</summary>
    public static readonly TimeSpan FillTimeout = TimeSpan.FromMinutes(5);

    private static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(30);

    private readonly Lock _lock = new();
    private readonly Dictionary<string, Pool> _pools = new(StringComparer.Ordinal);
    private readonly Dictionary<string, long> _generations = new(StringComparer.Ordinal);
    private readonly List<Machine> _discarded = [];
    private readonly HashSet<Machine> _evicting = [];
    private readonly Dictionary<string, IMachineBackend> _backends;
    private readonly Admission _admission;
    private readonly MachineTable _table;
    private readonly MachineTransitions _transitions;
    private readonly MachineEvents _events;
    private readonly TimeProvider _time;
    private readonly ILogger<MachineService> _logger;
    private int _coldCreates;
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public WarmPools(FalkConfig config, IEnumerable<IMachineBackend> backends, Admission admission, MachineTable table,
        MachineTransitions transitions, MachineEvents events, TimeProvider time, ILogger<MachineService> logger)
    {
        _backends = backends.ToDictionary(b => b.Type, StringComparer.Ordinal);
        foreach (var template in config.Templates.Where(t => t.PoolSize > 0))
        {
            _pools[template.Id] = new Pool(template, Admission.ImageOf(template, _backends));
        }

        _admission = admission;
        _table = table;
        _transitions = transitions;
        _events = events;
        _time = time;
        _logger = logger;
    }

    public bool Any => _pools.Count > 0;

    internal IReadOnlyList<TemplateDefinition> Templates => _pools.Values.Select(p => p.Template).ToList();

    public IReadOnlyList<WarmPoolView> Views
    {
        get
        {
            lock (_lock)
            {
                return _pools.Values.Select(p => new WarmPoolView(p.Template.Id, p.Template.PoolSize, p.Ready.Count, p.Filling)).ToList();
            }
        }
    }

    /// <summary>Completes at the next change the filler should look at (a hand-out, a death, a fill's end, a commit, a create's end).</summary>
    internal Task Changed
    {
        get
        {
            lock (_lock)
            {
                return _changed.Task;
            }
        }
    }

    /// <summary>
    /// Hands a pooled machine of one of <paramref name="candidates"/> to the caller: it becomes theirs, with their labels,
    /// lease (starting now) and idempotency key. Null when no candidate has a live one waiting; a dead one met on the
    /// way is put aside for the filler to destroy and replace.
    /// </summary>
    internal Machine? TryHandOut(IReadOnlyList<TemplateDefinition> candidates, Caller caller, IReadOnlyDictionary<string, string> labels,
        TimeSpan lease, string? idempotencyKey)
    {
        Machine? machine = null;
        lock (_lock)
        {
            foreach (var pool in candidates.Select(t => _pools.GetValueOrDefault(t.Id)).OfType<Pool>())
            {
                while (machine is null && pool.Ready.Count > 0)
                {
                    var next = pool.Ready[0];
                    pool.Ready.RemoveAt(0);
                    if (!IsAlive(next))
                    {
                        Discard(next);
                        continue;
                    }

                    try
                    {
                        _admission.HandOver(next.Reservation, caller);
                    }
                    catch (CapacityExhaustedException)
                    {
                        pool.Ready.Insert(0, next);
                        throw;
                    }

                    machine = next;
                }

                if (machine is not null)
                {
                    break;
                }
            }

            if (machine is null)
            {
                return null;
            }

            lock (machine.Sync)
            {
                var now = _time.GetUtcNow();
                machine.OwnerUid = caller.Uid;
                machine.Labels = labels;
                machine.IdempotencyKey = idempotencyKey;
                machine.CreatedAt = now;
                machine.LeaseExpiresAt = now + lease;
                _transitions.Save(machine);
            }

            Signal();
        }

        WarmPoolLog.HandedOut(_logger, machine.Id, machine.Template.Id, caller.Uid);
        _events.Publish(MachineEventTypes.Created, machine, MachineState.Running, detail: "warm pool");
        return machine;
    }

    /// <summary>A create that found no pooled machine is under way: no fill starts until it is done.</summary>
    internal IDisposable EnterCold()
    {
        lock (_lock)
        {
            _coldCreates++;
        }

        return new ColdCreate(this);
    }

    /// <summary>
    /// A pooled machine of a template <paramref name="helps"/> accepts, to destroy so that a client's create fits: a
    /// waiting one first, else one being filled. Null when the daemon holds none such.
    /// </summary>
    internal Machine? TakeForEviction(Func<TemplateDefinition, bool> helps)
    {
        Machine? machine = null;
        lock (_lock)
        {
            if (_pools.Values.Where(p => p.Ready.Count > 0 && helps(p.Template)).MaxBy(p => p.Ready.Count) is { } pool)
            {
                machine = pool.Ready[^1];
                pool.Ready.RemoveAt(pool.Ready.Count - 1);
            }
            else
            {
                // One being filled: marked, under the lock, so that its fill cannot confirm it before the destroy begins.
                machine = _table.All.FirstOrDefault(m => m.IsPooled && helps(m.Template) && !m.IsBeingDeleted && !_evicting.Contains(m)
                    && !_pools.Values.Any(p => p.Ready.Contains(m)));
                if (machine is not null)
                {
                    _evicting.Add(machine);
                }
            }
        }

        if (machine is not null)
        {
            WarmPoolLog.Evicted(_logger, machine.Id, machine.Template.Id);
        }

        return machine;
    }

    /// <summary>The destroy of a machine <see cref="TakeForEviction"/> gave has ended.</summary>
    internal void Evicted(Machine machine)
    {
        lock (_lock)
        {
            _evicting.Remove(machine);
        }
    }

    /// <summary>
    /// Capacity for one more machine of <paramref name="template"/>'s pool, when the pool is short, no client's create
    /// is under way, the pool is not backing off after failures, and the limits have room. Null otherwise.
    /// </summary>
    internal PoolFill? TryReserveFill(TemplateDefinition template)
    {
        lock (_lock)
        {
            var pool = _pools[template.Id];
            if (_coldCreates > 0 || pool.Ready.Count + pool.Filling >= template.PoolSize || _time.GetUtcNow() < pool.NotBefore)
            {
                return null;
            }

            var id = Names.NewMachineId();
            AdmissionReservation reservation;
            try
            {
                reservation = _admission.Admit([template], Caller.Daemon, manage: false, id);
            }
            catch (CapacityExhaustedException)
            {
                // Clients' machines fill the daemon: the pool waits until one goes.
                return null;
            }

            pool.Filling++;
            return new PoolFill(template, id, reservation, _generations.GetValueOrDefault(pool.Scope));
        }
    }

    /// <summary>A machine taken back after a restart is checked before it joins the pool: it counts as filling meanwhile.</summary>
    internal long BeginCheck(TemplateDefinition template)
    {
        lock (_lock)
        {
            var pool = _pools[template.Id];
            pool.Filling++;
            return _generations.GetValueOrDefault(pool.Scope);
        }
    }

    internal bool HasPool(TemplateDefinition template) => _pools.ContainsKey(template.Id);

    /// <summary>
    /// The fill (or check) of <paramref name="machine"/> is done: it joins the pool if it is running, verified and of
    /// the image generation it started from. Returns false when it does not (the caller destroys it).
    /// </summary>
    internal bool Confirm(Machine machine, long generation)
    {
        lock (_lock)
        {
            var pool = _pools[machine.Template.Id];
            pool.Filling--;
            Signal();
            if (generation != _generations.GetValueOrDefault(pool.Scope) || _evicting.Contains(machine) || !IsAlive(machine)
                || pool.Ready.Count >= machine.Template.PoolSize)
            {
                return false;
            }

            lock (machine.Sync)
            {
                machine.LeaseExpiresAt = ConfirmedLease;
                _transitions.Save(machine);
            }

            pool.Ready.Add(machine);
            pool.Failures = 0;
        }

        WarmPoolLog.Ready(_logger, machine.Id, machine.Template.Id);
        _events.Publish(MachineEventTypes.Pooled, machine, MachineState.Running);
        return true;
    }

    /// <summary>A fill ended without a machine for the pool; a failure backs the pool off (1 s, doubling, at most 30 s).</summary>
    internal void FillEnded(TemplateDefinition template, bool failed)
    {
        lock (_lock)
        {
            var pool = _pools[template.Id];
            pool.Filling--;
            if (failed)
            {
                pool.Failures++;
                var backoff = TimeSpan.FromSeconds(Math.Min(MaxBackoff.TotalSeconds, Math.Pow(2, Math.Min(pool.Failures - 1, 10))));
                pool.NotBefore = _time.GetUtcNow() + backoff;
            }

            Signal();
        }
    }

    /// <summary>When the next pool that backs off may fill again; null when none waits for time.</summary>
    internal DateTimeOffset? NextRetry()
    {
        lock (_lock)
        {
            var now = _time.GetUtcNow();
            var waiting = _pools.Values.Where(p => p.NotBefore > now && p.Ready.Count + p.Filling < p.Template.PoolSize).Select(p => p.NotBefore).ToList();
            return waiting.Count > 0 ? waiting.Min() : null;
        }
    }

    /// <summary>
    /// A management commit of <paramref name="template"/>'s image answered (or is about to): every pooled machine of that
    /// image is of the old version. They leave the pools now, their lease ends (so that a restart never takes them back
    /// as pooled), and fills begun before are refused when they end. The filler destroys them and fills anew.
    /// </summary>
    internal void MakeStale(TemplateDefinition template)
    {
        var scope = Admission.ImageOf(template, _backends);
        var stale = new List<Machine>();
        lock (_lock)
        {
            _generations[scope] = _generations.GetValueOrDefault(scope) + 1;
            foreach (var pool in _pools.Values.Where(p => p.Scope == scope))
            {
                stale.AddRange(pool.Ready);
                pool.Ready.Clear();
            }

            var now = _time.GetUtcNow();
            foreach (var machine in stale)
            {
                lock (machine.Sync)
                {
                    machine.LeaseExpiresAt = now;
                    _transitions.Save(machine);
                }
            }

            _discarded.AddRange(stale);
            Signal();
        }

        if (stale.Count > 0 || _pools.Values.Any(p => p.Scope == scope))
        {
            WarmPoolLog.Stale(_logger, template.Id, stale.Count);
        }
    }

    /// <summary>Waiting machines that died, failed or were deleted leave their pool, to be destroyed and replaced.</summary>
    internal void DiscardDead()
    {
        lock (_lock)
        {
            foreach (var pool in _pools.Values)
            {
                foreach (var machine in pool.Ready.Where(m => !IsAlive(m)).ToList())
                {
                    pool.Ready.Remove(machine);
                    Discard(machine);
                }
            }
        }
    }

    /// <summary>The machines put aside since the last call, for the filler to destroy.</summary>
    internal IReadOnlyList<Machine> TakeDiscarded()
    {
        lock (_lock)
        {
            var discarded = _discarded.ToList();
            _discarded.Clear();
            return discarded;
        }
    }

    internal void Signal()
    {
        lock (_lock)
        {
            var changed = _changed;
            _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            changed.TrySetResult();
        }
    }

    /// <summary>A waiting machine that died, failed or is being deleted: out of its pool, for the filler to destroy. Called under the lock.</summary>
    private void Discard(Machine machine)
    {
        _discarded.Add(machine);
        WarmPoolLog.Dead(_logger, machine.Id, machine.Template.Id, machine.IsBeingDeleted ? "being deleted" : machine.View().State.ToWire());
    }

    private static bool IsAlive(Machine machine)
    {
        lock (machine.Sync)
        {
            return machine.Deletion is null && machine.IsPooled && machine.IsRunningAndVerified && machine.Instance.Exited is { IsCompleted: false };
        }
    }

    private void EndCold()
    {
        lock (_lock)
        {
            _coldCreates--;
            Signal();
        }
    }

    private sealed class Pool(TemplateDefinition template, string scope)
    {
        public TemplateDefinition Template { get; } = template;

        public string Scope { get; } = scope;

        /// <summary>Verified machines, the longest waiting first.</summary>
        public List<Machine> Ready { get; } = [];

        public int Filling { get; set; }

        public int Failures { get; set; }

        public DateTimeOffset NotBefore { get; set; }
    }

    private sealed class ColdCreate(WarmPools pools) : IDisposable
    {
        private int _disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
            {
                pools.EndCold();
            }
        }
    }
}
