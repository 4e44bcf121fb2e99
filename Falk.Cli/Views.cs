using System.Text.Json;
using System.Text.Json.Nodes;

namespace Falk.Cli;

/// <summary>What each listing shows a person (the API's JSON, for scripts, is printed by <c>--json</c> instead).</summary>
public static class Views
{
    /// <summary><c>falk ls</c>: what and where a machine is first, then how long it has, then whose it is.</summary>
    public static IReadOnlyList<string> Machines(JsonArray machines, DateTimeOffset now, int width) => TextTable.Render(
        [
            new("ID"), new("TEMPLATE", Shorten.End, 10), new("STATE"), new("SSH", Shorten.Middle, 14),
            new("LEASE ENDS"), new("LABELS", Shorten.End, 10), new("CREATED"),
        ],
        machines.Select(m => new[]
        {
            Text(m?["id"]),
            Text(m?["template"]),
            Text(m?["state"]),
            // The login user is the template's (falk templates); where to connect is what tells machines apart.
            $"{Text(m?["ssh"]?["host"])}:{Text(m?["ssh"]?["port"])}",
            RelativeTime.FormatApiValue(Text(m?["lease_expires_at"]), now),
            // A management machine belongs to no job: that comes first where the jobs' labels are.
            string.Join(' ', new[] { m?["manage"]?.GetValueKind() == JsonValueKind.True ? "[manage]" : null, Labels(m?["labels"] as JsonObject) }.OfType<string>()),
            RelativeTime.FormatApiValue(Text(m?["created_at"]), now),
        }),
        width);

    /// <summary><c>falk templates</c>, with the host key's source and whether it is verified in the API's words.</summary>
    public static IReadOnlyList<string> Templates(JsonArray templates, int width) => TextTable.Render(
        [new("NAME"), new("TYPE"), new("SSH USER", Shorten.End), new("HOST KEY"), new("MANAGE")],
        templates.Select(t => new[]
        {
            Text(t?["name"]),
            Text(t?["type"]),
            Text(t?["ssh_user"]),
            HostKey(Text(t?["host_key_source"]), t?["host_key_verified"]?.GetValueKind() == JsonValueKind.True),
            t?["manage_supported"]?.GetValueKind() == JsonValueKind.True ? "yes" : "no",
        }),
        width);

    /// <summary>"image, verified" / "observed, not verified": where a host key comes from and whether it is checked.</summary>
    public static string HostKey(string? source, bool verified) => $"{source ?? "none"}, {(verified ? "verified" : "not verified")}";

    /// <summary><c>falk show</c>: one field a line, nested blocks indented, values aligned; times also relative to now.</summary>
    public static IReadOnlyList<string> Fields(JsonObject item, DateTimeOffset now)
    {
        var rows = new List<(string Key, string? Value)>();
        Flatten(item, string.Empty, rows, now);
        var keyWidth = rows.Where(r => r.Value is not null).Select(r => r.Key.Length).DefaultIfEmpty(0).Max() + 2;
        return rows.Select(r => r.Value is null ? r.Key : r.Key.PadRight(keyWidth) + r.Value).ToList();
    }

    /// <summary>One line of <c>falk events</c>.</summary>
    public static string Event(JsonNode e) =>
        $"{Text(e["time"])}  {Text(e["type"]),-14}  {Text(e["machine_id"])}  {Text(e["template"])}{(e["detail"] is { } detail ? "  " + Text(detail) : string.Empty)}";

    /// <summary>Labels compactly, in key order: <c>job=42,pipeline=7</c>.</summary>
    public static string? Labels(JsonObject? labels) =>
        labels is null || labels.Count == 0 ? null : string.Join(',', labels.OrderBy(l => l.Key, StringComparer.Ordinal).Select(l => $"{l.Key}={Text(l.Value)}"));

    private static void Flatten(JsonObject item, string indent, List<(string Key, string? Value)> rows, DateTimeOffset now)
    {
        foreach (var (key, value) in item)
        {
            switch (value)
            {
                case JsonObject { Count: > 0 } block:
                    rows.Add((indent + key, null));
                    Flatten(block, indent + "  ", rows, now);
                    break;
                case JsonArray array:
                    rows.Add((indent + key, array.Count == 0 ? "-" : string.Join(", ", array.Select(a => a is JsonObject ? a.ToJsonString(Output.JsonLineOptions) : Text(a)))));
                    break;
                case JsonObject:
                    rows.Add((indent + key, "-"));
                    break;
                default:
                    var text = Text(value) ?? "-";
                    rows.Add((indent + key, IsTime(key) && RelativeTime.TryParse(text, out var time) ? $"{text} ({RelativeTime.Format(time, now)})" : text));
                    break;
            }
        }
    }

    private static bool IsTime(string key) => key.EndsWith("_at", StringComparison.Ordinal) || key == "time";

    private static string? Text(JsonNode? node) => node?.GetValueKind() switch
    {
        null or JsonValueKind.Null => null,
        JsonValueKind.String => node.GetValue<string>(),
        _ => node.ToJsonString(),
    };
}
