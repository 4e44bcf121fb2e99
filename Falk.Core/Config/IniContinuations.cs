using System.Text;
using Microsoft.Extensions.Configuration.Ini;

namespace Falk.Core.Config;

/// <summary>
/// Reads an INI file as Python's configparser (the original daemon's reader) does as far as multi-line values go: a line
/// indented deeper than the key line above it continues that key's value on a new line (comment lines between are
/// skipped, a blank line ends the value). Everything else is .NET's INI reader's, whose lines are one key each.
/// </summary>
internal static class IniContinuations
{
    /// <summary>Stands for a line break while the value passes through the one-line-per-key reader.</summary>
    private const char LineBreak = '\0';

    public static IDictionary<string, string?> Read(string path)
    {
        var joined = new StringBuilder();
        int? keyIndent = null;
        foreach (var line in File.ReadLines(path))
        {
            if (line.Contains(LineBreak, StringComparison.Ordinal))
            {
                throw new InvalidDataException("a line holds a NUL character");
            }

            var text = line.Trim();
            var indent = line.Length - line.TrimStart().Length;
            if (text.Length == 0)
            {
                keyIndent = null;
                joined.Append('\n');
            }
            else if (text[0] is ';' or '#' or '/')
            {
                // A comment neither continues nor ends a value (configparser skips it), and is dropped as the reader would.
            }
            else if (keyIndent is { } above && indent > above)
            {
                joined.Append(LineBreak).Append(text);
            }
            else
            {
                keyIndent = text[0] != '[' && text.Contains('=', StringComparison.Ordinal) ? indent : null;
                joined.Append('\n').Append(line);
            }
        }

        using var stream = new MemoryStream(Encoding.UTF8.GetBytes(joined.ToString()));
        return IniStreamConfigurationProvider.Read(stream)
            .ToDictionary(e => e.Key, e => e.Value?.Replace(LineBreak, '\n'), StringComparer.OrdinalIgnoreCase);
    }
}
