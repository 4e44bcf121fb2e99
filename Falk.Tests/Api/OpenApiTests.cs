using System.Net;
using System.Text.Json.Nodes;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Api;

/// <summary>The checked-in openapi.json is exactly what the daemon serves; Swagger UI is there for people.</summary>
public sealed class OpenApiTests(SshdDaemonFixture fixture) : IClassFixture<SshdDaemonFixture>
{
    /// <summary>Set to 1 to have an out-of-date openapi.json rewritten from the running daemon (the test still fails, naming the change).</summary>
    public const string UpdateVariable = "FALK_UPDATE_OPENAPI";

    [Fact(Timeout = 60_000)]
    public async Task The_served_document_matches_openapi_json_at_the_repository_root()
    {
        var ct = TestContext.Current.CancellationToken;
        using var response = await fixture.Client.GetAsync("swagger/v1/swagger.json", ct);
        response.StatusCode.Should().Be(HttpStatusCode.OK);
        var served = JsonNode.Parse(await response.Content.ReadAsStringAsync(ct))!;
        var path = Path.Combine(RepositoryPaths.Root, "openapi.json");
        var checkedIn = JsonNode.Parse(await File.ReadAllTextAsync(path, ct))!;
        if (JsonNode.DeepEquals(served, checkedIn))
        {
            return;
        }

        // Out of date: the comparison above is with the file as it was, so a rewrite never makes the test pass by itself.
        if (Environment.GetEnvironmentVariable(UpdateVariable) == "1")
        {
            await File.WriteAllTextAsync(path, served.ToJsonString(new() { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }) + "\n", ct);
            Assert.Fail($"openapi.json differed from the served document and has been rewritten; review the change and run again without {UpdateVariable}");
        }

        Assert.Fail($"openapi.json must match the served document; regenerate it with `{UpdateVariable}=1 dotnet test --filter-method '*The_served_document_matches*'`");
    }

    [Fact(Timeout = 60_000)]
    public async Task Every_operation_has_a_summary_an_id_and_its_error_responses()
    {
        var ct = TestContext.Current.CancellationToken;
        using var response = await fixture.Client.GetAsync("swagger/v1/swagger.json", ct);
        var document = JsonNode.Parse(await response.Content.ReadAsStringAsync(ct))!;

        var operations = document["paths"]!.AsObject().SelectMany(p => p.Value!.AsObject().Select(o => (Path: p.Key, Method: o.Key, Operation: o.Value!))).ToList();
        operations.Should().HaveCountGreaterThanOrEqualTo(11);
        foreach (var (path, method, operation) in operations)
        {
            var summary = operation["summary"]?.GetValue<string>();
            var operationId = operation["operationId"]?.GetValue<string>();
            summary.Should().NotBeNullOrEmpty($"{method} {path} needs a summary");
            operationId.Should().NotBeNullOrEmpty($"{method} {path} needs an operation id");
            if (path.StartsWith("/v1/machines/{id}", StringComparison.Ordinal) && method != "delete")
            {
                operation["responses"]!.AsObject().Select(r => r.Key).Should().Contain("404", $"{method} {path} can answer 404");
            }
        }

        document["components"]!["schemas"]!["MachineResponse"]!["properties"]!.AsObject().Select(p => p.Key)
            .Should().Contain(["id", "state", "created_at", "last_error", "ssh"], "the wire format is snake_case");
    }

    [Fact(Timeout = 60_000)]
    public async Task Swagger_UI_is_served()
    {
        var ct = TestContext.Current.CancellationToken;
        using var response = await fixture.Client.GetAsync("swagger/index.html", ct);
        response.StatusCode.Should().Be(HttpStatusCode.OK);
        (await response.Content.ReadAsStringAsync(ct)).Should().Contain("swagger-ui");
    }
}
