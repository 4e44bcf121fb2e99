using System.Net;
using System.Text.Json.Nodes;

namespace Falk.Tests.Fixtures;

/// <summary>Short forms of the REST calls the tests make, each checking the status it expects.</summary>
public static class MachineApi
{
    public static async Task<JsonNode> CreateAsync(this HttpClient client, string template, CancellationToken ct, object? labels = null)
    {
        using var response = await client.PostJsonAsync("v1/machines", new { template, labels }, ct);
        var body = await response.JsonAsync(ct);
        response.StatusCode.Should().Be(HttpStatusCode.Created, body.ToJsonString());
        response.Headers.Location!.ToString().Should().Be($"/v1/machines/{body["id"]}");
        return body;
    }

    public static async Task<JsonNode> BootAsync(this HttpClient client, string id, CancellationToken ct, string query = "?wait=ssh&timeout=60")
    {
        using var response = await client.PostAsync($"v1/machines/{id}/boot{query}", null, ct);
        var body = await response.JsonAsync(ct);
        response.StatusCode.Should().Be(HttpStatusCode.OK, body.ToJsonString());
        return body;
    }

    public static async Task DeleteMachineAsync(this HttpClient client, string id, CancellationToken ct)
    {
        using var response = await client.DeleteAsync($"v1/machines/{id}", ct);
        response.StatusCode.Should().Be(HttpStatusCode.NoContent, await response.Content.ReadAsStringAsync(ct));
    }

    /// <summary>The machine's state as GET /v1/machines/{id} says it.</summary>
    public static async Task<string> StateAsync(this HttpClient client, string id, CancellationToken ct)
    {
        using var response = await client.GetAsync($"v1/machines/{id}", ct);
        var body = await response.JsonAsync(ct);
        response.StatusCode.Should().Be(HttpStatusCode.OK, body.ToJsonString());
        return body["state"]!.GetValue<string>();
    }

    public static async Task<JsonArray> ListAsync(this HttpClient client, CancellationToken ct)
    {
        using var response = await client.GetAsync("v1/machines", ct);
        response.StatusCode.Should().Be(HttpStatusCode.OK);
        return (await response.JsonAsync(ct)).AsArray();
    }

    /// <summary>Asserts a problem+json answer with the status and problem type; returns the problem.</summary>
    public static async Task<JsonNode> ShouldBeProblemAsync(this HttpResponseMessage response, HttpStatusCode status, string code, CancellationToken ct)
    {
        var body = await response.JsonAsync(ct);
        response.StatusCode.Should().Be(status, body.ToJsonString());
        response.Content.Headers.ContentType!.MediaType.Should().Be("application/problem+json");
        body["type"]!.GetValue<string>().Should().Be("urn:falk:problem:" + code);
        body["status"]!.GetValue<int>().Should().Be((int)status);
        body["title"]!.GetValue<string>().Should().NotBeNullOrEmpty();
        return body;
    }
}
