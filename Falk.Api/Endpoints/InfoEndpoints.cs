using System.Reflection;
using Falk.Api.Contracts;
using Falk.Core.Config;
using Falk.Core.Machines;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Falk.Api.Endpoints;

public static class InfoEndpoints
{
    public const string ApiVersion = "v1";

    public static string DaemonVersion { get; } =
        typeof(InfoEndpoints).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0] ?? "0.0.0";

    public static RouteGroupBuilder MapInfoEndpoints(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/v1/info").WithTags("Daemon");
        group.MapGet("/", GetInfo)
            .WithName("GetInfo")
            .WithSummary("Daemon name, version, API version, backends, capacity in use and warm pools")
            .ProducesProblem(StatusCodes.Status403Forbidden);
        return group;
    }

    internal static Ok<InfoResponse> GetInfo(FalkConfig config, MachineService machines, WarmPools pools)
    {
        var capacity = machines.Capacity;
        return TypedResults.Ok(new InfoResponse(
            config.Daemon.Name,
            DaemonVersion,
            ApiVersion,
            machines.BackendTypes.Order(StringComparer.Ordinal).ToList(),
            new CapacityResponse(capacity.Machines, capacity.MaxMachines, capacity.PortsInUse, capacity.PortsTotal),
            pools.Views.Select(p => new WarmPoolResponse(p.Template, p.Size, p.Ready, p.Filling)).ToList()));
    }
}
