using System.Net;
using System.Text.Json.Nodes;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Api;

/// <summary>Every kind of bad request gets its status as problem+json and changes nothing.</summary>
public sealed class BadInputTests(SshdDaemonFixture fixture) : IClassFixture<SshdDaemonFixture>
{
    private HttpClient Client => fixture.Client;

    public static TheoryData<string, string, HttpStatusCode, string, string> BadCreates => new()
    {
        { "unknown template", """{"template":"nope"}""", HttpStatusCode.NotFound, "template-not-found", "nope" },
        { "invalid template name", """{"template":"../etc"}""", HttpStatusCode.BadRequest, "invalid-request", "template name may contain only" },
        { "missing template", """{"labels":{}}""", HttpStatusCode.BadRequest, "invalid-request", "template is required" },
        { "malformed JSON", """{"template": "sshd" """, HttpStatusCode.BadRequest, "bad-request", "invalid JSON at $" },
        { "wrong type", """{"template":"sshd","manage":"yes"}""", HttpStatusCode.BadRequest, "bad-request", "$.manage" },
        { "unknown field", """{"template":"sshd","colour":"blue"}""", HttpStatusCode.BadRequest, "bad-request", "colour" },
        { "label with a bad key", """{"template":"sshd","labels":{"bad key":"x"}}""", HttpStatusCode.BadRequest, "invalid-request", "label key 'bad key'" },
        { "label with a control character", """{"template":"sshd","labels":{"job":"a\u0007b"}}""", HttpStatusCode.BadRequest, "invalid-request", "label 'job'" },
        { "label value not a string", """{"template":"sshd","labels":{"job":1}}""", HttpStatusCode.BadRequest, "bad-request", "$.labels.job" },
    };

    [Theory(Timeout = 30_000)]
    [MemberData(nameof(BadCreates))]
    public async Task A_bad_create_request_is_refused_and_changes_nothing(string what, string body, HttpStatusCode status, string code, string detail)
    {
        var ct = TestContext.Current.CancellationToken;
        var before = await StateAsync(ct);

        using var response = await Client.PostRawAsync("v1/machines", body, ct);

        var problem = await response.ShouldBeProblemAsync(status, code, ct);
        problem["detail"]!.GetValue<string>().Should().Contain(detail, what);
        (await StateAsync(ct)).Should().Be(before);
    }

    [Fact(Timeout = 30_000)]
    public async Task A_body_over_64_KiB_is_413()
    {
        var ct = TestContext.Current.CancellationToken;
        var before = await StateAsync(ct);
        var huge = new JsonObject { ["template"] = "sshd", ["labels"] = new JsonObject { ["x"] = new string('a', 70_000) } };

        // Expect: 100-continue, as curl sends for large bodies: the daemon refuses by Content-Length before any of the
        // body is sent. Without it the client may still be writing when the 413 closes the connection (a broken pipe).
        using var request = new HttpRequestMessage(HttpMethod.Post, "v1/machines")
        {
            Content = new StringContent(huge.ToJsonString(), System.Text.Encoding.UTF8, "application/json"),
        };
        request.Headers.ExpectContinue = true;

        using var response = await Client.SendAsync(request, ct);

        await response.ShouldBeProblemAsync(HttpStatusCode.RequestEntityTooLarge, "body-too-large", ct);
        (await StateAsync(ct)).Should().Be(before);
    }

    [Fact(Timeout = 30_000)]
    public async Task An_empty_body_is_400()
    {
        var ct = TestContext.Current.CancellationToken;
        using var response = await Client.PostAsync("v1/machines", new StringContent(string.Empty, System.Text.Encoding.UTF8, "application/json"), ct);
        await response.ShouldBeProblemAsync(HttpStatusCode.BadRequest, "bad-request", ct);
    }

    [Theory(Timeout = 30_000)]
    [InlineData("GET", "v1/machines/mnosuchmachine", HttpStatusCode.NotFound, "machine-not-found")]
    [InlineData("GET", "v1/machines/mnosuchmachine/ssh", HttpStatusCode.NotFound, "machine-not-found")]
    [InlineData("POST", "v1/machines/mnosuchmachine/boot", HttpStatusCode.NotFound, "machine-not-found")]
    [InlineData("POST", "v1/machines/mnosuchmachine/stop", HttpStatusCode.NotFound, "machine-not-found")]
    [InlineData("POST", "v1/machines/mnosuchmachine/wait", HttpStatusCode.NotFound, "machine-not-found")]
    [InlineData("GET", "v1/machines/bad%20id", HttpStatusCode.BadRequest, "invalid-request")]
    [InlineData("DELETE", "v1/machines/bad%20id", HttpStatusCode.BadRequest, "invalid-request")]
    [InlineData("GET", "v1/templates/nope", HttpStatusCode.NotFound, "template-not-found")]
    [InlineData("GET", "v1/templates/a%2Fb", HttpStatusCode.BadRequest, "invalid-request")]
    public async Task Unknown_and_invalid_ids_are_404_and_400(string method, string path, HttpStatusCode status, string code)
    {
        var ct = TestContext.Current.CancellationToken;
        using var request = new HttpRequestMessage(new HttpMethod(method), path);
        using var response = await Client.SendAsync(request, ct);
        await response.ShouldBeProblemAsync(status, code, ct);
    }

    [Theory(Timeout = 30_000)]
    [InlineData("boot?wait=forever", "wait must be 'ssh' or 'none'")]
    [InlineData("boot?wait=ssh&timeout=0", "timeout must be from 1 to 3600")]
    [InlineData("boot?wait=ssh&timeout=soon", "timeout")]
    [InlineData("wait?condition=running", "condition must be 'stopped'")]
    public async Task Bad_query_parameters_are_400_and_change_nothing(string action, string detail)
    {
        var ct = TestContext.Current.CancellationToken;
        var id = (await Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>();
        try
        {
            using var response = await Client.PostAsync($"v1/machines/{id}/{action}", null, ct);

            var problem = await response.ShouldBeProblemAsync(HttpStatusCode.BadRequest, action.StartsWith("boot?wait=ssh&timeout=soon", StringComparison.Ordinal) ? "bad-request" : "invalid-request", ct);
            problem["detail"]!.GetValue<string>().Should().Contain(detail);
            (await Client.StateAsync(id, ct)).Should().Be("prepared");
        }
        finally
        {
            await Client.DeleteMachineAsync(id, ct);
        }
    }

    [Fact(Timeout = 30_000)]
    public async Task Stopping_or_waiting_on_a_machine_that_never_booted_is_409_naming_its_state()
    {
        var ct = TestContext.Current.CancellationToken;
        var id = (await Client.CreateAsync("sshd", ct))["id"]!.GetValue<string>();
        try
        {
            using var stop = await Client.PostJsonAsync($"v1/machines/{id}/stop", new { timeout_seconds = 1 }, ct);
            var problem = await stop.ShouldBeProblemAsync(HttpStatusCode.Conflict, "wrong-state", ct);
            problem["state"]!.GetValue<string>().Should().Be("prepared");
            problem["detail"]!.GetValue<string>().Should().Contain("is prepared");

            using var wait = await Client.PostAsync($"v1/machines/{id}/wait?condition=stopped&timeout=1", null, ct);
            (await wait.ShouldBeProblemAsync(HttpStatusCode.Conflict, "wrong-state", ct))["state"]!.GetValue<string>().Should().Be("prepared");
        }
        finally
        {
            await Client.DeleteMachineAsync(id, ct);
        }
    }

    /// <summary>What a client can see of the daemon: its machines and the capacity in use.</summary>
    private async Task<string> StateAsync(CancellationToken ct)
    {
        using var info = await Client.GetAsync("v1/info", ct);
        var capacity = (await info.JsonAsync(ct))["capacity"]!.ToJsonString();
        var machines = (await Client.ListAsync(ct)).ToJsonString();
        return capacity + machines;
    }
}
