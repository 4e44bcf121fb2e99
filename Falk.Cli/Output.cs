using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Spectre.Console;

namespace Falk.Cli;

/// <summary>What falk prints: tables or JSON on stdout, progress and errors on stderr (plain lines when not a terminal).</summary>
public sealed class Output(bool json)
{
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    private readonly IAnsiConsole _err = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });

    public bool Json { get; } = json;

    public static bool IsTerminal => !Console.IsOutputRedirected && !Console.IsErrorRedirected;

    public static void PrintJson(JsonNode node) => Console.WriteLine(node.ToJsonString(Indented));

    public void Table(JsonNode items, params (string Header, Func<JsonNode, string?> Value)[] columns)
    {
        if (Json)
        {
            PrintJson(items);
            return;
        }

        var table = new Table().Border(TableBorder.Simple);
        foreach (var (header, _) in columns)
        {
            table.AddColumn(header);
        }

        foreach (var item in items.AsArray())
        {
            table.AddRow(columns.Select(c => Markup.Escape(c.Value(item!) ?? "-")).ToArray());
        }

        AnsiConsole.Write(table);
    }

    public static void Error(string message) => Console.Error.WriteLine($"falk: {message}");

    public static void Info(string message) => Console.Error.WriteLine($"falk: {message}");

    /// <summary>
    /// Runs one long step, showing what it is doing and for how long: a live spinner on a terminal, otherwise a
    /// line when it starts and one when it ends. <paramref name="status"/> lets the step change its text.
    /// </summary>
    public async Task<T> StepAsync<T>(string what, Func<Action<string>, Task<T>> step)
    {
        var watch = Stopwatch.StartNew();
        if (!IsTerminal || Json)
        {
            Info($"{what}…");
            var plain = await step(text => Info($"  {text} ({watch.Elapsed.TotalSeconds:0.0} s)"));
            Info($"{what}: done in {watch.Elapsed.TotalSeconds:0.0} s");
            return plain;
        }

        T result = default!;
        string? detail = null;
        await _err.Status().StartAsync(what, async context =>
        {
            // One line: what the step is, how far it has come (from the step), and for how long.
            using var ticker = new Timer(
                _ => context.Status($"{Markup.Escape(what)}{(detail is null ? string.Empty : ": " + Markup.Escape(detail))} ({watch.Elapsed.TotalSeconds:0.0} s)"),
                null, 0, 100);
            result = await step(text => detail = text);
        });
        _err.MarkupLine($"[green]✓[/] {Markup.Escape(what)} [grey]({watch.Elapsed.TotalSeconds:0.0} s)[/]");
        return result;
    }
}
