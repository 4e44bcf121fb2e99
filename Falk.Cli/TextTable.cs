using System.Globalization;
using System.Text;

namespace Falk.Cli;

/// <summary>How a value that does not fit its column is shortened (it is never wrapped).</summary>
public enum Shorten
{
    /// <summary>Always shown whole (ids, states, short times): the column is dropped rather than cut.</summary>
    Never,

    /// <summary><c>job=42,pipeline=7…</c>: the start is what tells values apart.</summary>
    End,

    /// <summary><c>chant…27.0.0.1:7888</c>: both ends matter, the end more.</summary>
    Middle,
}

/// <summary>A column: its header, how to shorten its values, and the width it keeps while being shortened.</summary>
public sealed record TextColumn(string Header, Shorten Shorten = Shorten.Never, int MinWidth = 8);

/// <summary>
/// A plain table, one line per row, that fits a width: columns are given most important first; when the rows are too
/// wide the last shortenable columns are cut (with <c>…</c>) down to their minimum, then the last columns are left out.
/// </summary>
public static class TextTable
{
    public const string Ellipsis = "…";

    private const int Gap = 2;

    public static IReadOnlyList<string> Render(IReadOnlyList<TextColumn> columns, IEnumerable<IReadOnlyList<string?>> rows, int width)
    {
        var cells = rows.Select(r => columns.Select((_, i) => OneLine(i < r.Count ? r[i] : null)).ToArray()).ToList();
        var natural = columns.Select((c, i) => cells.Select(r => DisplayWidth(r[i])).Append(DisplayWidth(c.Header)).Max()).ToArray();
        var minimum = columns.Select((c, i) => c.Shorten == Shorten.Never
            ? natural[i]
            : Math.Min(natural[i], Math.Max(c.MinWidth, DisplayWidth(c.Header)))).ToArray();

        // Leave out the least important columns until the rest fit at their minimum (the first one always stays).
        var count = columns.Count;
        while (count > 1 && Total(minimum, count) > width)
        {
            count--;
        }

        // Then cut the least important shortenable columns first, each down to its minimum at most.
        var widths = natural[..count];
        var excess = Total(widths, count) - width;
        for (var i = count - 1; i >= 0 && excess > 0; i--)
        {
            var cut = Math.Min(excess, widths[i] - minimum[i]);
            widths[i] -= cut;
            excess -= cut;
        }

        var lines = new List<string>(cells.Count + 1) { Line(columns.Select(c => c.Header).ToArray(), columns, widths, width) };
        lines.AddRange(cells.Select(r => Line(r, columns, widths, width)));
        return lines;
    }

    /// <summary>Columns a value takes in a terminal: East Asian wide characters and emoji take two.</summary>
    public static int DisplayWidth(string text)
    {
        var width = 0;
        var elements = StringInfo.GetTextElementEnumerator(text);
        while (elements.MoveNext())
        {
            width += ElementWidth(elements.GetTextElement());
        }

        return width;
    }

    /// <summary>Cuts <paramref name="text"/> to <paramref name="width"/> columns, marking the cut with <see cref="Ellipsis"/>.</summary>
    public static string Fit(string text, int width, Shorten shorten)
    {
        if (DisplayWidth(text) <= width)
        {
            return text;
        }

        if (width <= 1)
        {
            return Ellipsis[..width];
        }

        if (shorten == Shorten.Middle)
        {
            // The end tells more (a port, a file name): it keeps two thirds.
            var head = (width - 1) / 3;
            return Take(text, head) + Ellipsis + TakeLast(text, width - 1 - head);
        }

        return Take(text, width - 1) + Ellipsis;
    }

    private static int Total(int[] widths, int count) => widths.Take(count).Sum() + (Gap * (count - 1));

    private static string Line(string[] values, IReadOnlyList<TextColumn> columns, int[] widths, int width)
    {
        var line = new StringBuilder();
        for (var i = 0; i < widths.Length; i++)
        {
            var value = Fit(values[i], widths[i], columns[i].Shorten == Shorten.Never ? Shorten.End : columns[i].Shorten);
            line.Append(value);
            if (i < widths.Length - 1)
            {
                line.Append(' ', widths[i] - DisplayWidth(value) + Gap);
            }
        }

        // Only a first column wider than the terminal can still be too long: cut it rather than wrap.
        return Fit(line.ToString(), width, Shorten.End);
    }

    /// <summary>A cell is one line: line breaks and tabs in a value become spaces; a missing value is "-".</summary>
    private static string OneLine(string? value) =>
        string.IsNullOrEmpty(value) ? "-" : string.Concat(value.Select(c => char.IsControl(c) ? ' ' : c));

    private static string Take(string text, int width)
    {
        var taken = new StringBuilder();
        var used = 0;
        var elements = StringInfo.GetTextElementEnumerator(text);
        while (elements.MoveNext() && used + ElementWidth(elements.GetTextElement()) <= width)
        {
            used += ElementWidth(elements.GetTextElement());
            taken.Append(elements.GetTextElement());
        }

        return taken.ToString();
    }

    private static string TakeLast(string text, int width)
    {
        var elements = new List<string>();
        var enumerator = StringInfo.GetTextElementEnumerator(text);
        while (enumerator.MoveNext())
        {
            elements.Add(enumerator.GetTextElement());
        }

        var used = 0;
        var start = elements.Count;
        while (start > 0 && used + ElementWidth(elements[start - 1]) <= width)
        {
            used += ElementWidth(elements[--start]);
        }

        return string.Concat(elements.Skip(start));
    }

    private static int ElementWidth(string element)
    {
        var rune = Rune.GetRuneAt(element, 0);
        if (Rune.GetUnicodeCategory(rune) is UnicodeCategory.NonSpacingMark or UnicodeCategory.EnclosingMark or UnicodeCategory.Format)
        {
            return 0;
        }

        return rune.Value switch
        {
            >= 0x1100 and <= 0x115F or >= 0x2E80 and <= 0xA4CF or >= 0xAC00 and <= 0xD7A3 or >= 0xF900 and <= 0xFAFF
                or >= 0xFE30 and <= 0xFE4F or >= 0xFF00 and <= 0xFF60 or >= 0xFFE0 and <= 0xFFE6
                or >= 0x1F300 and <= 0x1FAFF or >= 0x20000 and <= 0x3FFFD => 2,
            _ => 1,
        };
    }
}
