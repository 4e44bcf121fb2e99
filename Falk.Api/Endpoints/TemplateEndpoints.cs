using Falk.Api.Contracts;
using Falk.Core.Machines;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Falk.Api.Endpoints;

public static class TemplateEndpoints
{
    public static RouteGroupBuilder MapTemplateEndpoints(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/v1/templates").WithTags("Templates");
        group.MapGet("/", ListTemplates)
            .WithName("ListTemplates")
            .WithSummary("The configured machine kinds")
            .ProducesProblem(StatusCodes.Status403Forbidden);
        group.MapGet("/{name}", GetTemplate)
            .WithName("GetTemplate")
            .WithSummary("One configured machine kind")
            .ProducesProblem(StatusCodes.Status400BadRequest)
            .ProducesProblem(StatusCodes.Status403Forbidden)
            .ProducesProblem(StatusCodes.Status404NotFound);
        return group;
    }

    internal static Ok<List<TemplateResponse>> ListTemplates(MachineService machines) =>
        TypedResults.Ok(machines.Templates.Select(TemplateResponse.From).ToList());

    internal static Ok<TemplateResponse> GetTemplate(string name, MachineService machines) =>
        TypedResults.Ok(TemplateResponse.From(machines.GetTemplate(name)));
}
