using System.Diagnostics;
using System.Globalization;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using Spectre.Console;

namespace Falk.Cli;

/// <summary>What falk prints: tables or JSON on stdout, progress and errors on stderr (plain lines when not a terminal).</summary>
public sealed class Output(bool json)
{
    /// <summary>The API's JSON as it is: indented, and '+' in host keys and fingerprints left as it is.</summary>
    public static readonly JsonSerializerOptions JsonOptions = new() { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>The same on one line (one event a line).</summary>
    public static readonly JsonSerializerOptions JsonLineOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private readonly IAnsiConsole _err = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });

    public bool Json { get; } = json;

    public static bool IsTerminal => !Console.IsOutputRedirected && !Console.IsErrorRedirected;

    /// <summary>
    /// The width tables fit in: the terminal's when stdout is one, else <c>$COLUMNS</c>, else 80.
    /// </summary>
    public static int Width
    {
        get
        {
            if (!Console.IsOutputRedirected)
            {
                try
                {
                    if (Console.WindowWidth > 0)
                    {
                        return Console.WindowWidth;
                    }
                }
                catch (IOException)
                {
                    // No terminal size to ask for after all: fall through.
                }
            }

            return int.TryParse(Environment.GetEnvironmentVariable("COLUMNS"), NumberStyles.None, CultureInfo.InvariantCulture, out var columns) && columns > 0
                ? columns
                : 80;
        }
    }

    public static void PrintJson(JsonNode node) => Console.WriteLine(node.ToJsonString(JsonOptions));

    /// <summary>Prints <paramref name="items"/> as JSON with <c>--json</c>, else the lines <paramref name="render"/> makes of them.</summary>
    public void Print(JsonNode items, Func<JsonNode, IEnumerable<string>> render)
    {
        if (Json)
        {
            PrintJson(items);
            return;
        }

        foreach (var line in render(items))
        {
            Console.WriteLine(line);
        }
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
