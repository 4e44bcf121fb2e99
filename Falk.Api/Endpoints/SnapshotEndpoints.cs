using Falk.Api.Contracts;
using Falk.Api.Hosting;
using Falk.Core.Machines;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Falk.Api.Endpoints;

public static class SnapshotEndpoints
{
    public static RouteGroupBuilder MapSnapshotEndpoints(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/v1/machines/{id}/snapshots")
            .WithTags("Snapshots")
            .ProducesProblem(StatusCodes.Status400BadRequest)
            .ProducesProblem(StatusCodes.Status403Forbidden)
            .ProducesProblem(StatusCodes.Status404NotFound)
            .ProducesProblem(StatusCodes.Status409Conflict);

        group.MapPost("/", CreateSnapshot)
            .WithName("CreateSnapshot")
            .WithSummary("Save the machine's state (live, with memory, where the backend can) under a name")
            .ProducesProblem(StatusCodes.Status502BadGateway);

        group.MapGet("/", ListSnapshots)
            .WithName("ListSnapshots")
            .WithSummary("The machine's snapshots with their times and sizes");

        group.MapPost("/{snapshot}/restore", RestoreSnapshot)
            .WithName("RestoreSnapshot")
            .WithSummary("Bring the machine back to a snapshot, keeping its id and SSH port")
            .ProducesProblem(StatusCodes.Status502BadGateway);

        group.MapDelete("/{snapshot}", DeleteSnapshot)
            .WithName("DeleteSnapshot")
            .WithSummary("Remove a snapshot; the machine itself does not change")
            .ProducesProblem(StatusCodes.Status502BadGateway);

        return group;
    }

    internal static async Task<Created<SnapshotResponse>> CreateSnapshot(
        string id, CreateSnapshotBody body, HttpContext http, MachineService machines, CancellationToken cancellationToken)
    {
        if (string.IsNullOrEmpty(body.Name))
        {
            throw new InvalidRequestException("name", "name is required");
        }

        var snapshot = await machines.CreateSnapshotAsync(id, http.Caller(), body.Name, cancellationToken);
        return TypedResults.Created($"/v1/machines/{id}/snapshots/{snapshot.Name}", SnapshotResponse.From(snapshot));
    }

    internal static async Task<Ok<List<SnapshotResponse>>> ListSnapshots(
        string id, HttpContext http, MachineService machines, CancellationToken cancellationToken)
    {
        var snapshots = await machines.ListSnapshotsAsync(id, http.Caller(), cancellationToken);
        return TypedResults.Ok(snapshots.Select(SnapshotResponse.From).ToList());
    }

    internal static async Task<Ok<MachineResponse>> RestoreSnapshot(
        string id, string snapshot, HttpContext http, MachineService machines, CancellationToken cancellationToken)
    {
        var machine = await machines.RestoreSnapshotAsync(id, http.Caller(), snapshot, cancellationToken);
        return TypedResults.Ok(MachineResponse.From(machine));
    }

    internal static async Task<NoContent> DeleteSnapshot(
        string id, string snapshot, HttpContext http, MachineService machines, CancellationToken cancellationToken)
    {
        await machines.DeleteSnapshotAsync(id, http.Caller(), snapshot, cancellationToken);
        return TypedResults.NoContent();
    }
}
