using Falk.Api.Contracts;
using Falk.Api.Hosting;
using Falk.Core.Machines;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;

namespace Falk.Api.Endpoints;

public static class MachineEndpoints
{
    public const int DefaultBootTimeoutSeconds = 300;
    public const int DefaultStopTimeoutSeconds = 30;
    public const int MaxTimeoutSeconds = 3600;

    public static RouteGroupBuilder MapMachineEndpoints(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/v1/machines")
            .WithTags("Machines")
            .ProducesProblem(StatusCodes.Status403Forbidden)
            .ProducesProblem(StatusCodes.Status507InsufficientStorage);

        group.MapPost("/", CreateMachine)
            .WithName("CreateMachine")
            .WithSummary("Allocate a port and prepare a machine of a template")
            .WithDescription("A template with a warm pool (pool_size) hands out a machine that is already running and SSH-verified: "
                + "the answer says state running, and a boot of it answers at once. Otherwise the machine is prepared. "
                + "Management machines are always made afresh.")
            .ProducesProblem(StatusCodes.Status400BadRequest)
            .ProducesProblem(StatusCodes.Status404NotFound)
            .ProducesProblem(StatusCodes.Status413PayloadTooLarge)
            .ProducesProblem(StatusCodes.Status502BadGateway)
            .ProducesProblem(StatusCodes.Status503ServiceUnavailable);

        group.MapGet("/", ListMachines)
            .WithName("ListMachines")
            .WithSummary("The caller's machines (all machines for admins)");

        group.MapGet("/{id}", GetMachine)
            .WithName("GetMachine")
            .WithSummary("State, template, times, SSH access and last error of a machine")
            .ProducesProblem(StatusCodes.Status400BadRequest)
            .ProducesProblem(StatusCodes.Status404NotFound);

        group.MapPost("/{id}/boot", BootMachine)
            .WithName("BootMachine")
            .WithSummary("Launch a machine; with wait=ssh answer once SSH presents the expected host key")
            .WithDescription("A machine that is running and whose SSH server was already seen with its host key (one from a warm pool, "
                + "or one booted with wait=ssh before) answers 200 at once and nothing is launched again. A machine that is booting, "
                + "or running without that check, answers 409.")
            .ProducesProblem(StatusCodes.Status400BadRequest)
            .ProducesProblem(StatusCodes.Status404NotFound)
            .ProducesProblem(StatusCodes.Status409Conflict)
            .ProducesProblem(StatusCodes.Status502BadGateway)
            .ProducesProblem(StatusCodes.Status504GatewayTimeout);

        group.MapGet("/{id}/ssh", GetMachineSsh)
            .WithName("GetMachineSsh")
            .WithSummary("User, host, port and host key to log in to a machine")
            .ProducesProblem(StatusCodes.Status400BadRequest)
            .ProducesProblem(StatusCodes.Status404NotFound);

        group.MapPost("/{id}/wait", WaitForMachine)
            .WithName("WaitForMachine")
            .WithSummary("Wait for the guest to stop by itself (condition=stopped)")
            .ProducesProblem(StatusCodes.Status400BadRequest)
            .ProducesProblem(StatusCodes.Status404NotFound)
            .ProducesProblem(StatusCodes.Status409Conflict)
            .ProducesProblem(StatusCodes.Status504GatewayTimeout);

        group.MapPost("/{id}/stop", StopMachine)
            .WithName("StopMachine")
            .WithSummary("Graceful power-down, forced after timeout_seconds")
            .ProducesProblem(StatusCodes.Status400BadRequest)
            .ProducesProblem(StatusCodes.Status404NotFound)
            .ProducesProblem(StatusCodes.Status409Conflict);

        group.MapGet("/{id}/console", GetMachineConsole)
            .WithName("GetMachineConsole")
            .WithSummary("The serial console or container output; follow=true streams it until the machine stops")
            .Produces<string>(StatusCodes.Status200OK, "text/plain")
            .ProducesProblem(StatusCodes.Status400BadRequest)
            .ProducesProblem(StatusCodes.Status404NotFound);

        group.MapPut("/{id}/lease", RenewLease)
            .WithName("RenewLease")
            .WithSummary("Renew the machine's lease: it now ends `seconds` from now")
            .ProducesProblem(StatusCodes.Status400BadRequest)
            .ProducesProblem(StatusCodes.Status404NotFound);

        group.MapPost("/{id}/commit", CommitMachine)
            .WithName("CommitMachine")
            .WithSummary("Management mode only: stop the guest and publish its disk as the template's new image, atomically")
            .ProducesProblem(StatusCodes.Status400BadRequest)
            .ProducesProblem(StatusCodes.Status404NotFound)
            .ProducesProblem(StatusCodes.Status409Conflict)
            .ProducesProblem(StatusCodes.Status502BadGateway);

        group.MapDelete("/{id}", DeleteMachine)
            .WithName("DeleteMachine")
            .WithSummary("Stop hard and clean up; deleting an unknown machine is not an error")
            .ProducesProblem(StatusCodes.Status400BadRequest)
            .ProducesProblem(StatusCodes.Status502BadGateway);

        return group;
    }

    /// <param name="idempotencyKey">A retry with the same key gets the same machine instead of a second one.</param>
    internal static async Task<Created<MachineResponse>> CreateMachine(
        CreateMachineBody body,
        [FromHeader(Name = "Idempotency-Key")] string? idempotencyKey,
        HttpContext http,
        MachineService machines,
        CancellationToken cancellationToken)
    {
        if (string.IsNullOrEmpty(body.Template))
        {
            throw new InvalidRequestException("template", "template is required");
        }

        var request = new CreateMachineRequest(body.Template, body.Manage ?? false, body.Labels ?? [], body.LeaseSeconds, idempotencyKey);
        var machine = await machines.CreateAsync(request, http.Caller(), cancellationToken);
        return TypedResults.Created($"/v1/machines/{machine.Id}", MachineResponse.From(machine));
    }

    internal static Ok<List<MachineResponse>> ListMachines(HttpContext http, MachineService machines) =>
        TypedResults.Ok(machines.List(http.Caller()).Select(MachineResponse.From).ToList());

    internal static Ok<MachineResponse> GetMachine(string id, HttpContext http, MachineService machines) =>
        TypedResults.Ok(MachineResponse.From(machines.Get(id, http.Caller())));

    /// <param name="wait"><c>ssh</c> to answer once SSH is ready; <c>none</c> (default) to answer once launched.</param>
    /// <param name="timeout">Seconds to wait for SSH (default 300).</param>
    internal static async Task<Ok<MachineResponse>> BootMachine(
        string id, string? wait, int? timeout, HttpContext http, MachineService machines, CancellationToken cancellationToken)
    {
        var waitForSsh = wait switch
        {
            null or "" or "none" => false,
            "ssh" => true,
            _ => throw new InvalidRequestException("wait", $"wait must be 'ssh' or 'none', not '{wait}'"),
        };
        var machine = await machines.BootAsync(id, http.Caller(), waitForSsh, Seconds("timeout", timeout, DefaultBootTimeoutSeconds), cancellationToken);
        return TypedResults.Ok(MachineResponse.From(machine));
    }

    internal static Ok<SshResponse> GetMachineSsh(string id, HttpContext http, MachineService machines) =>
        TypedResults.Ok(SshResponse.From(machines.GetSsh(id, http.Caller())));

    /// <param name="condition">What to wait for; only <c>stopped</c>.</param>
    /// <param name="timeout">Seconds to wait (default 300).</param>
    internal static async Task<Ok<MachineResponse>> WaitForMachine(
        string id, string? condition, int? timeout, HttpContext http, MachineService machines, CancellationToken cancellationToken)
    {
        if (condition is not (null or "stopped"))
        {
            throw new InvalidRequestException("condition", $"condition must be 'stopped', not '{condition}'");
        }

        var machine = await machines.WaitUntilStoppedAsync(id, http.Caller(), Seconds("timeout", timeout, DefaultBootTimeoutSeconds), cancellationToken);
        return TypedResults.Ok(MachineResponse.From(machine));
    }

    internal static async Task<Ok<MachineResponse>> StopMachine(
        string id,
        [FromBody(EmptyBodyBehavior = Microsoft.AspNetCore.Mvc.ModelBinding.EmptyBodyBehavior.Allow)] StopMachineBody? body,
        HttpContext http,
        MachineService machines,
        CancellationToken cancellationToken)
    {
        var grace = body?.TimeoutSeconds is { } seconds && seconds == 0
            ? TimeSpan.Zero
            : Seconds("timeout_seconds", body?.TimeoutSeconds, DefaultStopTimeoutSeconds);
        var machine = await machines.StopAsync(id, http.Caller(), grace, cancellationToken);
        return TypedResults.Ok(MachineResponse.From(machine));
    }

    /// <param name="follow">Keep the answer open and stream new output until the machine stops.</param>
    internal static PushStreamHttpResult GetMachineConsole(string id, bool? follow, HttpContext http, MachineService machines, IHostApplicationLifetime lifetime)
    {
        // Look the machine up before the answer starts, so an unknown id is still a 404 problem.
        var caller = http.Caller();
        machines.Get(id, caller);
        var ends = CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted, lifetime.ApplicationStopping);
        http.Response.RegisterForDispose(ends);
        return TypedResults.Stream(
            async stream =>
            {
                try
                {
                    await machines.CopyConsoleAsync(id, caller, stream, follow ?? false, ends.Token);
                }
                catch (OperationCanceledException) when (ends.IsCancellationRequested)
                {
                    // The client left or the daemon is stopping: the stream just ends.
                }
            },
            "text/plain; charset=utf-8");
    }

    internal static Ok<MachineResponse> RenewLease(string id, RenewLeaseBody body, HttpContext http, MachineService machines)
    {
        if (body.Seconds is not { } seconds)
        {
            throw new InvalidRequestException("seconds", "seconds is required");
        }

        return TypedResults.Ok(MachineResponse.From(machines.RenewLease(id, http.Caller(), seconds)));
    }

    internal static async Task<Ok<CommitResponse>> CommitMachine(
        string id,
        [FromBody(EmptyBodyBehavior = Microsoft.AspNetCore.Mvc.ModelBinding.EmptyBodyBehavior.Allow)] CommitMachineBody? body,
        HttpContext http,
        MachineService machines,
        CancellationToken cancellationToken)
    {
        var grace = Seconds("timeout_seconds", body?.TimeoutSeconds, DefaultStopTimeoutSeconds);
        var caller = http.Caller();
        var result = await machines.CommitAsync(id, caller, grace, cancellationToken);
        return TypedResults.Ok(new CommitResponse(id, machines.Get(id, caller).Template, result.Version));
    }

    internal static async Task<NoContent> DeleteMachine(string id, HttpContext http, MachineService machines, CancellationToken cancellationToken)
    {
        if (Falk.Core.Machines.Names.Problem(id) is { } problem)
        {
            throw new InvalidRequestException("id", $"machine id {problem}");
        }

        await machines.DeleteAsync(id, http.Caller(), cancellationToken);
        return TypedResults.NoContent();
    }

    private static TimeSpan Seconds(string field, int? value, int fallback) => value switch
    {
        null => TimeSpan.FromSeconds(fallback),
        < 1 or > MaxTimeoutSeconds => throw new InvalidRequestException(field, $"{field} must be from 1 to {MaxTimeoutSeconds} seconds, not {value}"),
        _ => TimeSpan.FromSeconds(value.Value),
    };
}
