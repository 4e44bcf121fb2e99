namespace Falk.Api.Contracts;

/// <summary>What the daemon is and how full it is.</summary>
public sealed record InfoResponse(
    string Name,
    string Version,
    string ApiVersion,
    IReadOnlyList<string> Backends,
    CapacityResponse Capacity,
    IReadOnlyList<WarmPoolResponse> Pools);

/// <summary>A template's warm pool (its <c>pool_size</c>): machines booted and SSH-verified ahead of demand.</summary>
/// <param name="Template">The template's section id.</param>
/// <param name="Size">Machines the pool keeps (<c>pool_size</c>).</param>
/// <param name="Ready">Machines waiting, running and verified, for the next creates.</param>
/// <param name="Filling">Machines being made, booted and checked for the pool now.</param>
public sealed record WarmPoolResponse(string Template, int Size, int Ready, int Filling);

/// <summary>Machines and SSH ports in use, and their limits.</summary>
public sealed record CapacityResponse(int Machines, int MaxMachines, int PortsInUse, int PortsTotal);

/// <summary>Liveness answer.</summary>
public sealed record HealthResponse(string Status);
