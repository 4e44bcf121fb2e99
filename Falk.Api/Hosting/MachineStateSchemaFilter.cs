using System.Text.Json.Nodes;
using Falk.Api.Contracts;
using Falk.Core.Machines;
using Microsoft.OpenApi;
using Swashbuckle.AspNetCore.SwaggerGen;

namespace Falk.Api.Hosting;

/// <summary>A machine's <c>state</c> in the OpenAPI document: the closed set of values, and what <c>paused</c> means.</summary>
internal sealed class MachineStateSchemaFilter : ISchemaFilter
{
    public const string Description =
        "prepared, booting, running, paused, stopping, stopped or failed. 'paused' is a launched machine whose guest was paused " +
        "outside Falk (a QEMU monitor's 'stop'); it is 'running' again once resumed, and stop, delete and snapshots work on it as on a running one.";

    public void Apply(IOpenApiSchema schema, SchemaFilterContext context)
    {
        if (context.Type == typeof(MachineResponse)
            && schema.Properties?.TryGetValue("state", out var property) == true && property is OpenApiSchema state)
        {
            state.Enum = Enum.GetValues<MachineState>().Select(s => (JsonNode)JsonValue.Create(s.ToWire())).ToList();
            state.Description = Description;
        }
    }
}
