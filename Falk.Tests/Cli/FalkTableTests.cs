using System.Text.Json.Nodes;
using Falk.Cli;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Cli;

/// <summary>What a person reads from falk against a real daemon: in a pipe (80 columns or $COLUMNS) and in a terminal of a fixed width.</summary>
public sealed class FalkTableTests(SshdDaemonFixture fixture) : IClassFixture<SshdDaemonFixture>
{
    private static readonly object LongLabels = new Dictionary<string, string>
    {
        ["job"] = "4217",
        ["pipeline"] = "build-and-test-everything-on-every-supported-platform",
        ["note"] = "a+b <c>",
    };

    private string Socket => fixture.Daemon.SocketPath;

    [Fact(Timeout = 120_000)]
    public async Task Ls_has_one_line_a_machine_within_the_width_of_a_pipe_and_of_a_terminal()
    {
        var ct = TestContext.Current.CancellationToken;
        var ids = await CreateMachinesAsync(3, ct);
        try
        {
            await fixture.Client.BootAsync(ids[0], ct);

            var (pipeCode, pipe, _) = await FalkCommand.RunAsync(Socket, new Dictionary<string, string?> { ["COLUMNS"] = null }, ct, "ls");
            var (columnsCode, columns, _) = await FalkCommand.RunAsync(Socket, new Dictionary<string, string?> { ["COLUMNS"] = "132" }, ct, "ls");
            var (narrowCode, narrow) = await FalkCommand.RunInTerminalAsync(Socket, 60, ct, "ls");
            var (wideCode, wide) = await FalkCommand.RunInTerminalAsync(Socket, 200, ct, "ls");

            (pipeCode, columnsCode, narrowCode, wideCode).Should().Be((0, 0, 0, 0));
            ShouldBeOneLineARow(pipe, 80, ids);
            ShouldBeOneLineARow(columns, 132, ids);
            ShouldBeOneLineARow(narrow, 60, ids);
            ShouldBeOneLineARow(wide, 200, ids);
            Row(pipe, ids[0]).Should().Contain("running").And.Contain("in 59 min").And.Contain("job=4217,");
            Row(wide, ids[0]).Should().Contain("job=4217,note=a+b <c>,pipeline=build-and-test").And.MatchRegex(@"(now|\d+ s ago|\d+ min ago)$");
        }
        finally
        {
            await DeleteAsync(ids, ct);
        }
    }

    [Fact(Timeout = 120_000)]
    public async Task Templates_fit_a_narrow_terminal_and_name_where_host_keys_come_from()
    {
        var ct = TestContext.Current.CancellationToken;

        var (code, screen) = await FalkCommand.RunInTerminalAsync(Socket, 60, ct, "templates");

        code.Should().Be(0, screen);
        var lines = Lines(screen);
        lines.Should().HaveCount(4).And.AllSatisfy(l => TextTable.DisplayWidth(l).Should().BeLessThanOrEqualTo(60, l));
        lines.Single(l => l.StartsWith("sshd ", StringComparison.Ordinal)).Should().Contain("config, verified");
        lines.Single(l => l.StartsWith("sshd-unpinned ", StringComparison.Ordinal)).Should().Contain("observed, not verified");
    }

    [Fact(Timeout = 120_000)]
    public async Task Json_keeps_the_APIs_exact_values_and_show_prints_fields_as_they_are()
    {
        var ct = TestContext.Current.CancellationToken;
        var id = (await CreateMachinesAsync(1, ct))[0];
        try
        {
            var (lsCode, ls, _) = await FalkCommand.RunAsync(Socket, ct, "ls", "--json");
            var (showJsonCode, showJson, _) = await FalkCommand.RunAsync(Socket, ct, "show", "--json", id);
            var (showCode, show, _) = await FalkCommand.RunAsync(Socket, ct, "show", id);
            using var api = await fixture.Client.GetAsync($"v1/machines/{id}", ct);
            var machine = await api.JsonAsync(ct);

            (lsCode, showJsonCode, showCode).Should().Be((0, 0, 0));
            JsonNode.DeepEquals(JsonNode.Parse(showJson), machine).Should().BeTrue(showJson);
            JsonNode.DeepEquals(JsonNode.Parse(ls)!.AsArray().Single(m => m!["id"]!.GetValue<string>() == id), machine).Should().BeTrue(ls);
            showJson.Should().Contain("\"a+b <c>\"", "the API's values are printed as they are, not escaped");
            var lines = Lines(show);
            lines.Should().Contain(l => l.StartsWith("  note ", StringComparison.Ordinal) && l.EndsWith(" a+b <c>", StringComparison.Ordinal));
            lines.Should().Contain(l => l.StartsWith("  host_key_source ", StringComparison.Ordinal) && l.EndsWith(" config", StringComparison.Ordinal));
            lines.Should().Contain(l => l.StartsWith("lease_expires_at ", StringComparison.Ordinal) && l.EndsWith("(in 59 min)", StringComparison.Ordinal));
            show.Should().NotContain("\\u").And.NotContain("{");
        }
        finally
        {
            await DeleteAsync([id], ct);
        }
    }

    private async Task<List<string>> CreateMachinesAsync(int count, CancellationToken ct)
    {
        var ids = new List<string>();
        for (var i = 0; i < count; i++)
        {
            ids.Add((await fixture.Client.CreateAsync("sshd", ct, LongLabels))["id"]!.GetValue<string>());
        }

        return ids;
    }

    private async Task DeleteAsync(IEnumerable<string> ids, CancellationToken ct)
    {
        foreach (var id in ids)
        {
            await fixture.Client.DeleteMachineAsync(id, ct);
        }
    }

    private static void ShouldBeOneLineARow(string output, int width, List<string> ids)
    {
        var lines = Lines(output);
        lines.Should().HaveCount(ids.Count + 1, $"a header and one line per machine in {width} columns:\n{output}");
        lines.Should().AllSatisfy(l => TextTable.DisplayWidth(l).Should().BeLessThanOrEqualTo(width, $"no line may wrap in {width} columns"));
        lines[0].Should().StartWith("ID ");
        lines.Skip(1).Select(l => l.Split(' ')[0]).Should().BeEquivalentTo(ids);
    }

    private static string Row(string output, string id) => Lines(output).Single(l => l.StartsWith(id, StringComparison.Ordinal));

    private static List<string> Lines(string output) => output.Split('\n').Where(l => l.Length > 0).ToList();
}
