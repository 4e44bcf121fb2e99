using Falk.Core.Config;

namespace Falk.Core.Machines;

/// <summary>How much of the daemon's capacity is in use.</summary>
public sealed record CapacityView(int Machines, int MaxMachines, int PortsInUse, int PortsTotal);

/// <summary>
/// Admission of machines: the limits (max_machines, per template, per owner), the SSH port, and the one management
/// machine per image (templates whose backend says they share an image share the claim). What a machine holds is an
/// <see cref="AdmissionReservation"/>, given back exactly once.
/// </summary>
public sealed class Admission
{
    private static readonly TimeSpan RetryAfter = TimeSpan.FromSeconds(10);

    private readonly FalkConfig _config;
    private readonly PortAllocator _ports;
    private readonly Dictionary<string, IMachineBackend> _backends;
    private readonly Lock _lock = new();
    private readonly Dictionary<string, (string MachineId, string Template)> _managementByImage = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _machinesByTemplate = new(StringComparer.Ordinal);
    private readonly Dictionary<int, int> _machinesByOwner = [];
    private int _machineCount;

    public Admission(FalkConfig config, PortAllocator ports, IEnumerable<IMachineBackend> backends)
    {
        _config = config;
        _ports = ports;
        _backends = backends.ToDictionary(b => b.Type, StringComparer.Ordinal);
    }

    public CapacityView Capacity
    {
        get
        {
            lock (_lock)
            {
                return new CapacityView(_machineCount, _config.Daemon.MaxMachines, _ports.InUseCount, _ports.Range.Count);
            }
        }
    }

    /// <summary>
    /// Admits a new machine of one of <paramref name="candidates"/> (the sections of a pool, or one section): the
    /// least used section that has room in its own limits and whose management claim is free, in config order among
    /// equals. Throws when none has (the last section's refusal), holding nothing then.
    /// </summary>
    internal AdmissionReservation Admit(IReadOnlyList<TemplateDefinition> candidates, Caller owner, bool manage, string machineId)
    {
        lock (_lock)
        {
            return TemplatePool.Pick(candidates, t => _machinesByTemplate.GetValueOrDefault(t.Id), t => AdmitOne(t, owner, manage, machineId)).Reserved;
        }
    }

    /// <summary>Admits a machine of <paramref name="template"/> or throws; called under the lock.</summary>
    private AdmissionReservation AdmitOne(TemplateDefinition template, Caller caller, bool manage, string machineId)
    {
        var image = manage ? ClaimManagement(template, machineId, check: true) : null;
        if (_machineCount >= _config.Daemon.MaxMachines)
        {
            throw Refused(image, $"all {_config.Daemon.MaxMachines} machines are in use (max_machines)");
        }

        var ofTemplate = _machinesByTemplate.GetValueOrDefault(template.Id);
        if (template.MaxMachines is { } templateLimit && ofTemplate >= templateLimit)
        {
            throw Refused(image, $"all {templateLimit} machines of template '{template.Id}' are in use (its max_machines)");
        }

        var owner = caller.Uid;
        var ofOwner = _machinesByOwner.GetValueOrDefault(owner);
        if (OwnerLimit(caller) is { } ownerLimit && ofOwner >= ownerLimit)
        {
            throw Refused(image, $"uid {owner} already has {ofOwner} machines (max_machines_per_owner: {ownerLimit})");
        }

        int port;
        if (template.SshPort is { } fixedPort)
        {
            if (!_ports.TryReserve(fixedPort))
            {
                throw Refused(image, $"template '{template.Id}' uses the fixed ssh_port {fixedPort}, which is in use");
            }

            port = fixedPort;
        }
        else
        {
            port = _ports.TryAllocate() ?? throw Refused(image, $"no free port in vm_ports {_ports.Range}");
        }

        return Count(template, owner, port, image, machineId);
    }

    /// <summary>How many machines <paramref name="caller"/> may have: the configured limit, else the default for non-admins.</summary>
    private int? OwnerLimit(Caller caller) =>
        caller == Caller.Daemon ? null
        : _config.Daemon.MaxMachinesPerOwner ?? (caller.IsAdmin ? null : _config.Daemon.DefaultMaxMachinesPerOwner);

    /// <summary>Admits a machine taken back after a restart with the port it had, whatever the limits say now.</summary>
    internal AdmissionReservation Readmit(TemplateDefinition template, int owner, bool manage, string machineId, int port)
    {
        lock (_lock)
        {
            _ports.Claim(port);
            var image = manage ? ClaimManagement(template, machineId, check: false) : null;
            return Count(template, owner, port, image, machineId);
        }
    }

    private AdmissionReservation Count(TemplateDefinition template, int owner, int port, string? image, string machineId)
    {
        _machineCount++;
        _machinesByTemplate[template.Id] = _machinesByTemplate.GetValueOrDefault(template.Id) + 1;
        _machinesByOwner[owner] = _machinesByOwner.GetValueOrDefault(owner) + 1;
        return new AdmissionReservation(this, template, owner, port, image, machineId);
    }

    /// <summary>
    /// After a refusal for <paramref name="owner"/>: which pooled machines (of which templates) would make room if they
    /// were destroyed. Null when none would: the owner is at its own limit, which pooled machines do not count in.
    /// </summary>
    internal Func<TemplateDefinition, bool>? RoomIfFreed(IReadOnlyList<TemplateDefinition> candidates, Caller owner)
    {
        lock (_lock)
        {
            if (OwnerLimit(owner) is { } ownerLimit && _machinesByOwner.GetValueOrDefault(owner.Uid) >= ownerLimit)
            {
                return null;
            }

            // Out of machines or ports: any pooled machine frees one. Otherwise a template's own limit: only its own do.
            return _machineCount >= _config.Daemon.MaxMachines || _ports.InUseCount >= _ports.Range.Count
                ? _ => true
                : t => candidates.Any(c => c.Id == t.Id);
        }
    }

    /// <summary>
    /// A machine from a warm pool changes hands: it now counts for <paramref name="owner"/>, within that owner's limit
    /// (max_machines_per_owner). Throws, changing nothing, when the owner has no room.
    /// </summary>
    internal void HandOver(AdmissionReservation reservation, Caller caller)
    {
        lock (_lock)
        {
            var owner = caller.Uid;
            var ofOwner = _machinesByOwner.GetValueOrDefault(owner);
            if (OwnerLimit(caller) is { } ownerLimit && ofOwner >= ownerLimit)
            {
                throw new CapacityExhaustedException($"uid {owner} already has {ofOwner} machines (max_machines_per_owner: {ownerLimit})", RetryAfter);
            }

            _machinesByOwner[reservation.Owner]--;
            _machinesByOwner[owner] = ofOwner + 1;
            reservation.Owner = owner;
        }
    }

    /// <summary>What a management machine of <paramref name="template"/> edits (and its commit replaces): templates on one image share it.</summary>
    internal static string ImageOf(TemplateDefinition template, IReadOnlyDictionary<string, IMachineBackend> backends) =>
        $"{template.Type}:{(backends.TryGetValue(template.Type, out var backend) ? backend.ManagementScope(template) : template.Id)}";

    /// <summary>One management machine per image: a second one would edit the same image.</summary>
    private string ClaimManagement(TemplateDefinition template, string machineId, bool check)
    {
        var image = ImageOf(template, _backends);
        if (check && _managementByImage.TryGetValue(image, out var holder))
        {
            throw new ManagementConflictException(holder.Template == template.Id
                ? $"template '{template.Id}' already has a management machine ({holder.MachineId}); delete it first"
                : $"template '{template.Id}' shares its image with template '{holder.Template}', which has a management machine ({holder.MachineId}); delete it first");
        }

        _managementByImage[image] = (machineId, template.Id);
        return image;
    }

    private CapacityExhaustedException Refused(string? image, string message)
    {
        if (image is not null)
        {
            _managementByImage.Remove(image);
        }

        return new CapacityExhaustedException(message, RetryAfter);
    }

    internal void Release(AdmissionReservation reservation)
    {
        lock (_lock)
        {
            _ports.Release(reservation.Port);
            _machineCount--;
            _machinesByTemplate[reservation.Template.Id]--;
            _machinesByOwner[reservation.Owner]--;
            if (reservation.ManagedImage is { } image && _managementByImage.TryGetValue(image, out var holder) && holder.MachineId == reservation.MachineId)
            {
                _managementByImage.Remove(image);
            }
        }
    }
}

/// <summary>What one machine holds of the daemon's capacity: a slot in each count, its port, maybe the management claim.</summary>
public sealed class AdmissionReservation
{
    private readonly Admission _admission;
    private int _released;

    internal AdmissionReservation(Admission admission, TemplateDefinition template, int owner, int port, string? managedImage, string machineId)
    {
        _admission = admission;
        Template = template;
        Owner = owner;
        Port = port;
        ManagedImage = managedImage;
        MachineId = machineId;
    }

    public int Port { get; }

    internal TemplateDefinition Template { get; }

    /// <summary>Whose count the machine is in; changed only by <see cref="Admission.HandOver"/>, under its lock.</summary>
    internal int Owner { get; set; }

    internal string? ManagedImage { get; }

    internal string MachineId { get; }

    /// <summary>Gives everything back. Only the first call does anything.</summary>
    internal void Release()
    {
        if (Interlocked.Exchange(ref _released, 1) == 0)
        {
            _admission.Release(this);
        }
    }
}
