namespace Falk.Api.Contracts;

/// <summary>What the daemon is and how full it is.</summary>
public sealed record InfoResponse(
    string Name,
    string Version,
    string ApiVersion,
    IReadOnlyList<string> Backends,
    CapacityResponse Capacity);

/// <summary>Machines and SSH ports in use, and their limits.</summary>
public sealed record CapacityResponse(int Machines, int MaxMachines, int PortsInUse, int PortsTotal);

/// <summary>Liveness answer.</summary>
public sealed record HealthResponse(string Status);
