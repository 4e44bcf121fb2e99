using System.Text.Json.Nodes;
using Falk.Cli;

namespace Falk.Tests.Cli;

/// <summary>What falk's tables and fields look like, computed without a terminal.</summary>
public sealed class TextTableTests
{
    private static readonly DateTimeOffset Now = new(2026, 12, 4, 20, 7, 0, TimeSpan.Zero);

    private static JsonArray Machines() => JsonNode.Parse("""
        [
          {"id":"moozy93d44l0","template":"local-sshd","state":"running","manage":false,"created_at":"2026-12-04T20:05:00.000Z",
           "lease_expires_at":"2026-12-04T21:06:42.998Z","labels":{"pipeline":"build-and-test-everything-on-every-platform","job":"4217"},
           "ssh":{"user":"chantal","host":"127.0.0.1","port":7888}},
          {"id":"mizbhd1efqf5","template":"debian-sid-with-a-long-name","state":"prepared","manage":true,"created_at":"2026-12-04T18:00:00.000Z",
           "lease_expires_at":"2026-12-04T20:08:30.000Z","labels":{"note":"two\nlines"},
           "ssh":{"user":"chantal","host":"build-host.example.org","port":7999}}
        ]
        """)!.AsArray();

    [Theory]
    [InlineData(40)]
    [InlineData(60)]
    [InlineData(80)]
    [InlineData(100)]
    [InlineData(200)]
    public void Every_row_of_ls_is_one_line_within_the_width_starting_with_the_whole_id(int width)
    {
        var lines = Views.Machines(Machines(), Now, width);

        lines.Should().HaveCount(3);
        lines.Should().AllSatisfy(l => TextTable.DisplayWidth(l).Should().BeLessThanOrEqualTo(width, l));
        lines[0].Should().StartWith("ID  ");
        lines[1].Should().StartWith("moozy93d44l0  ");
        lines[2].Should().StartWith("mizbhd1efqf5  ");
    }

    [Fact]
    public void Ls_at_80_columns_shows_state_relative_times_and_labels_shortened_at_the_end()
    {
        var lines = Views.Machines(Machines(), Now, 80);

        lines[0].Split("  ", StringSplitOptions.RemoveEmptyEntries).Select(h => h.Trim())
            .Should().Equal("ID", "TEMPLATE", "STATE", "SSH", "LEASE ENDS", "LABELS");
        lines[1].Should().Contain("running").And.Contain("in 59 min").And.Contain("job=4217,").And.EndWith(TextTable.Ellipsis);
        lines[2].Should().Contain("in 1 min");
        lines[2].Should().Contain("[manage] ", "a management machine is told apart first where labels are").And.Contain(":7999", "a shortened SSH address keeps its port");
    }

    [Fact]
    public void A_wide_terminal_shows_every_column_whole()
    {
        var lines = Views.Machines(Machines(), Now, 200);

        lines[1].Should().Contain("  127.0.0.1:7888  ").And.Contain("job=4217,pipeline=build-and-test-everything-on-every-platform").And.EndWith("2 min ago");
        lines[2].Should().Contain("[manage] note=two lines", "a line break in a value must not break the row").And.EndWith("2 h 7 min ago");
        lines.Should().NotContain(l => l.Contains(TextTable.Ellipsis, StringComparison.Ordinal));
    }

    [Fact]
    public void Columns_that_cannot_shrink_are_left_out_from_the_last_and_the_first_is_cut_only_as_a_last_resort()
    {
        var columns = new TextColumn[] { new("ID"), new("STATE"), new("LABELS", Shorten.End, 6) };
        string?[][] rows = [["m0123456789a", "running", "job=42,pipeline=7"]];

        TextTable.Render(columns, rows, 24).Should().Equal("ID            STATE", "m0123456789a  running");
        TextTable.Render(columns, rows, 29).Should().Equal("ID            STATE    LABELS", "m0123456789a  running  job=4…");
        TextTable.Render(columns, rows, 8).Should().Equal("ID", "m012345…");
    }

    [Theory]
    [InlineData("chantal@127.0.0.1:7888", 12, Shorten.Middle, "cha…0.1:7888")]
    [InlineData("job=42,pipeline=7", 8, Shorten.End, "job=42,…")]
    [InlineData("短い名前です", 7, Shorten.End, "短い名…")]
    [InlineData("fits", 4, Shorten.End, "fits")]
    public void Shortened_values_fit_their_width_with_an_ellipsis(string value, int width, Shorten shorten, string expected)
    {
        TextTable.Fit(value, width, shorten).Should().Be(expected);
        TextTable.DisplayWidth(expected).Should().BeLessThanOrEqualTo(width);
    }

    [Theory]
    [InlineData(0.4, "now")]
    [InlineData(-12, "12 s ago")]
    [InlineData(-125, "2 min ago")]
    [InlineData(3599, "in 59 min")]
    [InlineData(7200, "in 2 h")]
    [InlineData(-5400, "1 h 30 min ago")]
    [InlineData(-100_000, "1 day ago")]
    [InlineData(900_000, "in 10 days")]
    public void Times_read_relative_to_now(double seconds, string expected) =>
        RelativeTime.Format(Now.AddSeconds(seconds), Now).Should().Be(expected);

    [Fact]
    public void Show_renders_nested_blocks_as_aligned_fields_with_values_as_they_are()
    {
        var machine = JsonNode.Parse("""
            {"id":"moozy93d44l0","state":"running","lease_expires_at":"2026-12-04T21:06:42.998Z","labels":{"job":"42"},"empty":{},
             "ssh":{"user":"chantal","port":7888,"fingerprint":"SHA256:ab+cd/ef","known_host_key_verified":true,"host_key_source":"image"},
             "last_error":null}
            """)!.AsObject();

        var lines = Views.Fields(machine, Now);

        lines.Should().Equal(
            "id                         moozy93d44l0",
            "state                      running",
            "lease_expires_at           2026-12-04T21:06:42.998Z (in 59 min)",
            "labels",
            "  job                      42",
            "empty                      -",
            "ssh",
            "  user                     chantal",
            "  port                     7888",
            "  fingerprint              SHA256:ab+cd/ef",
            "  known_host_key_verified  true",
            "  host_key_source          image",
            "last_error                 -");
    }

    [Fact]
    public void Templates_name_the_host_keys_source_and_whether_it_is_verified()
    {
        var templates = JsonNode.Parse("""
            [{"name":"debian-ssh","type":"podman","ssh_user":"chantal","manage_supported":true,"host_key_source":"image","host_key_verified":true},
             {"name":"unpinned","type":"custom","ssh_user":"root","manage_supported":true,"host_key_source":"observed","host_key_verified":false}]
            """)!.AsArray();

        var lines = Views.Templates(templates, 80);

        lines[1].Should().Contain("image, verified").And.NotContain("false");
        lines[2].Should().Contain("observed, not verified");
    }
}
