using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Hardening;

/// <summary>
/// Issue 13 item 10: every operation of openapi.json, called on the real daemon with bad path parameters (traversal,
/// encoded slashes, NUL, unicode, oversized), bad query values, bad headers and bad bodies (wrongly typed, negative,
/// oversized, NUL, unknown fields, not JSON), answers below 500, with problem+json for every 4xx, changes no machine
/// and no file, and the daemon keeps serving.
/// </summary>
public sealed class BadInputBatteryTests
{
    private const string Template = """
        [local]
        type = custom
        launch = /bin/sleep 1000
        ssh_user = nobody
        """;

    private static readonly string Long = new('x', 10_000);

    private static readonly string[] BadPathValues =
    [
        "..", "...", "../../etc/passwd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "a%2Fb", "%2F", "%252F", "%5C..%5C", "%00", "a%00b",
        "%C3%A9%F0%9F%99%82", "%FF%FE", "%20", "-1", "99999999999999999999", Long,
    ];

    private static readonly Dictionary<string, string[]> BadQueryValues = new()
    {
        ["integer"] = ["-1", "-2147483649", "99999999999", "1.5", "abc", "%00", "", Long],
        ["boolean"] = ["maybe", "2", "%00", "", Long],
        ["string"] = ["%00", "bogus", "%C3%A9%F0%9F%99%82", "%FF", "../x", "", Long],
    };

    private static readonly Dictionary<string, JsonNode?[]> BadBodyValues = new()
    {
        ["integer"] = [-1, -2147483649L, 99_999_999_999L, 1.5, "10", true, new JsonObject(), new JsonArray()],
        ["boolean"] = ["yes", 1, new JsonArray()],
        ["string"] = ["", "\u0000", "a\u0000b", "../../etc/passwd", "a/b", "é🙂", Long, 1, new JsonArray(), new JsonObject()],
        ["object"] = [new JsonArray(), "x", 1, new JsonObject { ["k"] = 1 }, new JsonObject { ["bad key"] = "x" }, new JsonObject { ["k"] = "\u0000" },
            new JsonObject { ["k"] = Long }, new JsonObject(Enumerable.Range(0, 2000).Select(i => KeyValuePair.Create($"k{i}", (JsonNode?)"v")))],
    };

    // A body that is valid for the operation, so that each bad property is what gets refused.
    private static readonly Dictionary<string, JsonObject> ValidBodies = new()
    {
        ["post /v1/machines"] = new() { ["template"] = "local" },
        ["put /v1/machines/{id}/lease"] = new() { ["seconds"] = 600 },
        ["post /v1/machines/{id}/snapshots"] = new() { ["name"] = "s1" },
    };

    [Fact(Timeout = 300_000)]
    public async Task Every_operation_refuses_bad_input_with_a_problem_below_500_and_changes_nothing()
    {
        var ct = TestContext.Current.CancellationToken;
        var daemon = await FalkDaemon.StartAsync(Template, ct, "default_lease_seconds = 600\nmax_lease_seconds = 3600");
        await using (daemon)
        {
            var id = (await daemon.Client.CreateAsync("local", ct))["id"]!.GetValue<string>();
            await daemon.Client.BootAsync(id, ct, "");
            var machinesFolder = daemon.Directory.File("state/machines");
            var before = await SnapshotAsync(daemon, machinesFolder, ct);

            var requests = Battery(JsonNode.Parse(await File.ReadAllTextAsync(Path.Combine(RepositoryPaths.Root, "openapi.json"), ct))!, id).ToList();
            var failures = new List<string>();
            foreach (var request in requests)
            {
                if (await SendAsync(daemon.Client, request, ct) is { } failure)
                {
                    failures.Add(failure);
                }
            }

            requests.Should().HaveCountGreaterThan(300);
            failures.Should().BeEmpty(string.Join("\n", failures));
            (await SnapshotAsync(daemon, machinesFolder, ct)).Should().Be(before, "bad input changes no machine and no file");
            using var health = await daemon.Client.GetAsync("healthz", ct);
            health.StatusCode.Should().Be(HttpStatusCode.OK);
        }
    }

    private sealed record BadRequest(string What, HttpMethod Method, string Path, HttpContent? Body = null, (string Name, string Value)? Header = null);

    private static IEnumerable<BadRequest> Battery(JsonNode openApi, string id)
    {
        foreach (var (path, operations) in openApi["paths"]!.AsObject())
        {
            foreach (var (method, operation) in operations!.AsObject())
            {
                var key = $"{method} {path}";
                var parameters = operation!["parameters"]?.AsArray().Select(p => p!).ToList() ?? [];
                var pathNames = parameters.Where(p => p["in"]!.GetValue<string>() == "path").Select(p => p["name"]!.GetValue<string>()).ToList();
                string Fill(string? bad, string? only) => pathNames.Aggregate(path, (p, name) =>
                    p.Replace("{" + name + "}", bad is not null && (only is null || only == name) ? bad : name == "id" ? id : "s1", StringComparison.Ordinal));
                var httpMethod = new HttpMethod(method.ToUpperInvariant());
                var validPath = Fill(null, null);

                foreach (var name in pathNames)
                {
                    foreach (var bad in BadPathValues)
                    {
                        yield return new BadRequest($"{key} {name}={Shorten(bad)}", httpMethod, Fill(bad, name), ValidBody(key));
                    }
                }

                foreach (var parameter in parameters)
                {
                    var name = parameter["name"]!.GetValue<string>();
                    var type = parameter["schema"]?["type"]?.GetValue<string>() ?? "string";
                    switch (parameter["in"]!.GetValue<string>())
                    {
                        case "query":
                            foreach (var bad in BadQueryValues[type])
                            {
                                yield return new BadRequest($"{key} ?{name}={Shorten(bad)}", httpMethod, $"{validPath}?{name}={bad}", ValidBody(key));
                            }

                            break;
                        case "header":
                            // Any string is a fine Idempotency-Key except one too long to keep.
                            foreach (var bad in name == "Last-Event-ID" ? ["-1", "abc", "99999999999999999999", "%00", Long] : new[] { Long })
                            {
                                yield return new BadRequest($"{key} {name}: {Shorten(bad)}", httpMethod, validPath, ValidBody(key), (name, bad));
                            }

                            break;
                    }
                }

                if (operation["requestBody"] is not { } requestBody)
                {
                    continue;
                }

                var required = requestBody["required"]?.GetValue<bool>() == true;
                var schemaName = requestBody["content"]!["application/json"]!["schema"]!["$ref"]!.GetValue<string>().Split('/')[^1];
                var properties = openApi["components"]!["schemas"]![schemaName]!["properties"]!.AsObject();
                foreach (var (property, schema) in properties)
                {
                    foreach (var bad in BadBodyValues[schema!["type"]!.GetValue<string>()])
                    {
                        var body = ValidBodyObject(key);
                        body[property] = bad?.DeepClone();
                        yield return new BadRequest($"{key} {property}={Shorten(bad?.ToJsonString() ?? "null")}", httpMethod, validPath, Json(body.ToJsonString()));
                    }
                }

                var wholeBodies = new List<(string, HttpContent)>
                {
                    ("[]", Json("[]")), ("\"x\"", Json("\"x\"")), ("42", Json("42")), ("{", Json("{")), ("unknown field", Json("""{"colour":"blue"}""")),
                    ("invalid UTF-8", new ByteArrayContent([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]) { Headers = { ContentType = new("application/json") } }),
                    ("100 KB", Json("{\"x\":\"" + new string('x', 100_000) + "\"}")),
                    ("text/plain", new StringContent("{}", Encoding.UTF8, "text/plain")),
                };
                if (required)
                {
                    wholeBodies.Add(("null", Json("null")));
                    wholeBodies.Add(("no body", Json("")));
                }

                foreach (var (what, content) in wholeBodies)
                {
                    yield return new BadRequest($"{key} body {what}", httpMethod, validPath, content);
                }
            }
        }
    }

    private static StringContent? ValidBody(string key) => ValidBodies.ContainsKey(key) ? Json(ValidBodyObject(key).ToJsonString()) : null;

    private static JsonObject ValidBodyObject(string key) => ValidBodies.TryGetValue(key, out var body) ? (JsonObject)body.DeepClone() : [];

    private static StringContent Json(string text) => new(text, Encoding.UTF8, "application/json");

    private static string Shorten(string value) => value.Length > 40 ? value[..20] + $"…({value.Length} chars)" : value;

    /// <summary>Sends one request; the reason it fails the battery, or null.</summary>
    private static async Task<string?> SendAsync(HttpClient client, BadRequest request, CancellationToken ct)
    {
        using var message = new HttpRequestMessage(request.Method, new Uri(client.BaseAddress + request.Path.TrimStart('/'), new UriCreationOptions { DangerousDisablePathAndQueryCanonicalization = true })) { Content = request.Body };
        if (request.Header is { } header)
        {
            message.Headers.TryAddWithoutValidation(header.Name, header.Value);
        }

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(TimeSpan.FromSeconds(20));
        try
        {
            using var response = await client.SendAsync(message, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
            var status = (int)response.StatusCode;
            if (status >= 500)
            {
                return $"{request.What}: {status} {await response.Content.ReadAsStringAsync(timeout.Token)}";
            }

            // Kestrel refuses a request line it cannot parse (a NUL in the target, a target over 8 KiB) before any
            // middleware runs, with an empty 400 or 414; every answer Falk's pipeline gives has a problem body.
            var refusedByKestrel = status is 400 or 414 && response.Content.Headers.ContentLength == 0;
            if (status >= 400 && !refusedByKestrel && response.Content.Headers.ContentType?.MediaType != "application/problem+json")
            {
                return $"{request.What}: {status} without problem+json ({response.Content.Headers.ContentType})";
            }

            return status is >= 200 and < 300 && request.Method != HttpMethod.Get && request.Method != HttpMethod.Delete
                ? $"{request.What}: {status}, accepted"
                : null;
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            return $"{request.What}: no answer within 20 s";
        }
        catch (HttpRequestException e)
        {
            return $"{request.What}: {e.Message}";
        }
    }

    private static async Task<string> SnapshotAsync(FalkDaemon daemon, string machinesFolder, CancellationToken ct)
    {
        var machines = (await daemon.Client.ListAsync(ct)).Select(m => $"{m!["id"]} {m["state"]} {m["labels"]?.ToJsonString()}");
        var files = Directory.GetFileSystemEntries(machinesFolder, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal);
        return string.Join('\n', machines.Concat(files));
    }
}
