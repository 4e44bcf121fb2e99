using System.Net;
using System.Text.Json.Nodes;
using Falk.Core.Waiting;

namespace Falk.Tests.Fixtures;

/// <summary>What the tests read of warm pools through the API: <c>/v1/info</c>'s pools and the pooled machines an admin sees.</summary>
public static class WarmPoolApi
{
    public static async Task<JsonNode> InfoAsync(this HttpClient client, CancellationToken ct)
    {
        using var response = await client.GetAsync("v1/info", ct);
        response.StatusCode.Should().Be(HttpStatusCode.OK);
        return await response.JsonAsync(ct);
    }

    /// <summary>
    /// Waits until the pool of <paramref name="template"/> has exactly <paramref name="count"/> machines ready and none
    /// filling; returns them as <c>GET /v1/machines</c> lists them (owned by the daemon, uid -1, and running).
    /// </summary>
    public static Task<IReadOnlyList<JsonNode>> WaitForPoolAsync(this HttpClient client, string template, int count, CancellationToken ct, TimeSpan? timeout = null) =>
        Wait.UntilAsync(async token =>
        {
            var pool = (await client.InfoAsync(token))["pools"]!.AsArray().Single(p => p!["template"]!.GetValue<string>() == template)!;
            var ready = pool["ready"]!.GetValue<int>();
            if (ready != count || pool["filling"]!.GetValue<int>() != 0)
            {
                return ProbeOutcome.NotYet<IReadOnlyList<JsonNode>>($"{ready} ready, {pool["filling"]} filling");
            }

            var pooled = (await client.ListAsync(token))
                .Where(m => m!["owner_uid"]!.GetValue<int>() == -1 && m["template"]!.GetValue<string>() == template && m["state"]!.GetValue<string>() == "running")
                .Select(m => m!)
                .ToList();
            return pooled.Count == count
                ? ProbeOutcome.Done<IReadOnlyList<JsonNode>>(pooled)
                : ProbeOutcome.NotYet<IReadOnlyList<JsonNode>>($"{pooled.Count} pooled machines listed");
        }, TimeSpan.FromMilliseconds(50), timeout ?? TimeSpan.FromSeconds(60), $"{count} machines ready in the warm pool of {template}", ct);
}
