using System.Globalization;
using System.Net;
using System.Text.Json.Nodes;
using Falk.Core.Processes;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Api;

/// <summary>
/// Who may use the daemon and who is an admin, decided from the peer's uid and groups (SO_PEERCRED) on the real
/// socket. The other peer is curl run as uid 65534 (nobody) with chosen supplementary groups, so these tests need
/// root — as CI has; they are skipped (and counted as skipped by test.sh) anywhere else.
/// </summary>
public sealed class AccessTests
{
    private const int Nobody = 65534;

    private const string Template = """
        [local]
        type = custom
        launch = /bin/sleep 1000
        ssh_user = nobody
        """;

    [Fact(Timeout = 60_000)]
    public async Task A_peer_that_is_not_an_allowed_user_gets_403_and_sees_nothing()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var daemon = await StartOpenToEveryoneAsync("allowed_users = root", ct);

        var (status, body) = await AsNobodyAsync(daemon, [], HttpMethod.Get, "v1/machines", null, ct);

        status.Should().Be(HttpStatusCode.Forbidden);
        body["type"]!.GetValue<string>().Should().Be("urn:falk:problem:access-denied");
        body["detail"]!.GetValue<string>().Should().Contain($"uid {Nobody}");
        using var asRoot = await daemon.Client.GetAsync("v1/machines", ct);
        asRoot.StatusCode.Should().Be(HttpStatusCode.OK);
    }

    [Fact(Timeout = 60_000)]
    public async Task Allowed_groups_admit_a_peer_by_a_supplementary_group_and_no_one_else()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var daemon = await StartOpenToEveryoneAsync("allowed_groups = daemon", ct);
        var daemonGroup = GroupId("daemon");

        (await AsNobodyAsync(daemon, [daemonGroup], HttpMethod.Get, "v1/machines", null, ct)).Status.Should().Be(HttpStatusCode.OK);
        var (status, body) = await AsNobodyAsync(daemon, [], HttpMethod.Get, "v1/machines", null, ct);
        status.Should().Be(HttpStatusCode.Forbidden);
        body["type"]!.GetValue<string>().Should().Be("urn:falk:problem:access-denied");
        var (created, _) = await AsNobodyAsync(daemon, [], HttpMethod.Post, "v1/machines", """{"template":"local"}""", ct);
        created.Should().Be(HttpStatusCode.Forbidden);
        (await daemon.Client.ListAsync(ct)).Should().BeEmpty("a refused peer changes nothing");
    }

    [Fact(Timeout = 60_000)]
    public async Task A_non_admin_gets_403_for_management_and_sees_only_its_own_machines_while_an_admin_group_member_sees_all()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var daemon = await StartOpenToEveryoneAsync("admin_groups = adm", ct);
        var rootsMachine = (await daemon.Client.CreateAsync("local", ct))["id"]!.GetValue<string>();

        var (manage, problem) = await AsNobodyAsync(daemon, [], HttpMethod.Post, "v1/machines", """{"template":"local","manage":true}""", ct);
        manage.Should().Be(HttpStatusCode.Forbidden);
        problem["type"]!.GetValue<string>().Should().Be("urn:falk:problem:access-denied");
        problem["detail"]!.GetValue<string>().Should().Contain("admins");

        var (created, own) = await AsNobodyAsync(daemon, [], HttpMethod.Post, "v1/machines", """{"template":"local"}""", ct);
        created.Should().Be(HttpStatusCode.Created);
        own["owner_uid"]!.GetValue<int>().Should().Be(Nobody);
        var ownId = own["id"]!.GetValue<string>();

        var (_, seen) = await AsNobodyAsync(daemon, [], HttpMethod.Get, "v1/machines", null, ct);
        Ids(seen).Should().Equal(ownId);
        (await AsNobodyAsync(daemon, [], HttpMethod.Get, $"v1/machines/{rootsMachine}", null, ct)).Status.Should().Be(HttpStatusCode.NotFound);
        // DELETE is idempotent (204 for a machine the caller cannot see) but must not touch another uid's machine.
        await AsNobodyAsync(daemon, [], HttpMethod.Delete, $"v1/machines/{rootsMachine}", null, ct);
        (await daemon.Client.StateAsync(rootsMachine, ct)).Should().Be("prepared", "another uid's delete does nothing");

        var adm = GroupId("adm");
        var (_, seenByAdmin) = await AsNobodyAsync(daemon, [adm], HttpMethod.Get, "v1/machines", null, ct);
        Ids(seenByAdmin).Should().BeEquivalentTo([rootsMachine, ownId]);
        var (managed, management) = await AsNobodyAsync(daemon, [adm], HttpMethod.Post, "v1/machines", """{"template":"local","manage":true}""", ct);
        managed.Should().Be(HttpStatusCode.Created, management.ToJsonString());
        Ids(await daemon.Client.ListAsync(ct)).Should().HaveCount(3, "root, the daemon's user, sees every machine");
    }

    /// <summary>A daemon whose socket and folder anyone may open, so that only the access rules in <paramref name="access"/> decide.</summary>
    private static async Task<FalkDaemon> StartOpenToEveryoneAsync(string access, CancellationToken ct)
    {
        Assert.SkipUnless(Environment.UserName == "root", "needs root to connect as another uid");
        var daemon = await FalkDaemon.StartAsync(Template, ct, access);
        File.SetUnixFileMode(daemon.SocketPath, (UnixFileMode)Convert.ToInt32("777", 8));
        File.SetUnixFileMode(daemon.Directory.Path, (UnixFileMode)Convert.ToInt32("755", 8));
        return daemon;
    }

    /// <summary>curl as uid and gid 65534 with exactly <paramref name="groups"/> as supplementary groups; the status and the JSON body.</summary>
    private static async Task<(HttpStatusCode Status, JsonNode Body)> AsNobodyAsync(FalkDaemon daemon, int[] groups, HttpMethod method, string path, string? json, CancellationToken ct)
    {
        List<string> args = ["setpriv", $"--reuid={Nobody}", $"--regid={Nobody}",
            groups.Length == 0 ? "--clear-groups" : "--groups=" + string.Join(',', groups),
            "curl", "-s", "-X", method.Method, "-w", "\n%{http_code}", "--unix-socket", daemon.SocketPath];
        if (json is not null)
        {
            args.AddRange(["-H", "Content-Type: application/json", "-d", json]);
        }

        args.Add("http://falk/" + path);
        var answer = await new ProcessRunner().RunAsync(new ProcessSpec(args), TimeSpan.FromSeconds(30), ct);
        var output = answer.StdoutTail.TrimEnd('\n');
        var split = output.LastIndexOf('\n');
        var status = (HttpStatusCode)int.Parse(output[(split + 1)..], CultureInfo.InvariantCulture);
        var body = split > 0 ? JsonNode.Parse(output[..split]) : null;
        return (status, body ?? new JsonObject());
    }

    private static int GroupId(string name) => Falk.Core.Unix.UnixAccounts.ResolveGroup(name) ?? throw new InvalidOperationException($"no group {name}");

    private static IEnumerable<string> Ids(JsonNode list) => list.AsArray().Select(m => m!["id"]!.GetValue<string>());
}
