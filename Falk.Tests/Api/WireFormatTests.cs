using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Api;

/// <summary>How the API writes what clients parse: times, and where a host key comes from.</summary>
public sealed partial class WireFormatTests
{
    private static readonly string[] MachineTimes = ["created_at", "state_changed_at", "lease_expires_at"];

    [Fact(Timeout = 60_000)]
    public async Task Times_are_UTC_with_Z_and_milliseconds_in_answers_and_events()
    {
        var ct = TestContext.Current.CancellationToken;
        var daemon = await FalkDaemon.StartAsync("""
            [sleeper]
            type = custom
            launch = /bin/sleep 1000
            ssh_user = nobody
            ssh_host = 127.0.0.1
            """, ct);
        await using (daemon)
        {
            var created = await daemon.Client.CreateAsync("sleeper", ct);
            var id = created["id"]!.GetValue<string>();
            using var listed = await daemon.Client.GetAsync("v1/machines", ct);
            var machine = (await listed.JsonAsync(ct)).AsArray().Single()!;
            var firstEvent = await FirstEventAsync(daemon.Client, ct);
            await daemon.Client.DeleteMachineAsync(id, ct);

            foreach (var time in MachineTimes.SelectMany(k => new[] { created[k], machine[k] }).Append(firstEvent["time"]))
            {
                time!.GetValue<string>().Should().MatchRegex(UtcMilliseconds().ToString());
                DateTimeOffset.Parse(time.GetValue<string>(), System.Globalization.CultureInfo.InvariantCulture).Offset.Should().Be(TimeSpan.Zero);
            }

            machine["lease_expires_at"]!.GetValue<DateTimeOffset>().Should().BeCloseTo(DateTimeOffset.UtcNow.AddHours(1), TimeSpan.FromMinutes(1));
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task Templates_say_where_their_host_keys_come_from_in_the_words_machines_use()
    {
        var ct = TestContext.Current.CancellationToken;
        using var keys = new TempDirectory();
        var ssh = await SshServerFiles.CreateAsync(keys.Path, ct);
        // The podman engine need not answer for the template to be listed.
        var daemon = await FalkDaemon.StartAsync($"""
            [pinned]
            type = custom
            launch = /bin/sleep 1000
            ssh_user = nobody
            ssh_known_host_key_file = {ssh.HostPublicKeyPath}

            [unpinned]
            type = custom
            launch = /bin/sleep 1000
            ssh_user = nobody

            [per-machine]
            type = podman
            base_image = localhost/none:latest
            ssh_user = chantal

            [from-image]
            type = podman
            base_image = localhost/none:latest
            ssh_user = chantal
            host_key = image

            [podman-pinned]
            type = podman
            base_image = localhost/none:latest
            ssh_user = chantal
            ssh_known_host_key_file = {ssh.HostPublicKeyPath}
            """, ct, $"podman_socket = unix://{keys.File("no-podman.sock")}");
        await using (daemon)
        {
            using var response = await daemon.Client.GetAsync("v1/templates", ct);
            var templates = (await response.JsonAsync(ct)).AsArray().ToDictionary(t => t!["name"]!.GetValue<string>(), t => t!);

            templates.Values.Should().AllSatisfy(t => t.AsObject().Select(p => p.Key).Should().NotContain("host_key_pinned"));
            (templates["pinned"]["host_key_source"]!.GetValue<string>(), templates["pinned"]["host_key_verified"]!.GetValue<bool>()).Should().Be(("config", true));
            (templates["unpinned"]["host_key_source"]!.GetValue<string>(), templates["unpinned"]["host_key_verified"]!.GetValue<bool>()).Should().Be(("observed", false));
            (templates["per-machine"]["host_key_source"]!.GetValue<string>(), templates["per-machine"]["host_key_verified"]!.GetValue<bool>()).Should().Be(("machine", true));
            (templates["from-image"]["host_key_source"]!.GetValue<string>(), templates["from-image"]["host_key_verified"]!.GetValue<bool>()).Should().Be(("image", true));
            (templates["podman-pinned"]["host_key_source"]!.GetValue<string>(), templates["podman-pinned"]["host_key_verified"]!.GetValue<bool>())
                .Should().Be(("config", true), "a configured key wins over the image's");
        }
    }

    private static async Task<JsonNode> FirstEventAsync(HttpClient client, CancellationToken ct)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, "v1/events");
        request.Headers.Add("Last-Event-ID", "0");
        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(ct));
        while (await reader.ReadLineAsync(ct) is { } line)
        {
            if (line.StartsWith("data: ", StringComparison.Ordinal))
            {
                return JsonNode.Parse(line[6..])!;
            }
        }

        throw new InvalidOperationException("the event stream ended before an event");
    }

    [GeneratedRegex(@"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")]
    private static partial Regex UtcMilliseconds();
}
