using System.Text;

namespace Falk.Core.Processes;

/// <summary>
/// Splits a command line into arguments the way a POSIX shell splits words (quotes and backslashes),
/// without any expansion: nothing is ever handed to a shell.
/// </summary>
public static class CommandLine
{
    /// <summary>Splits <paramref name="commandLine"/>; throws <see cref="FormatException"/> on an unterminated quote.</summary>
    public static IReadOnlyList<string> Split(string commandLine)
    {
        var args = new List<string>();
        var current = new StringBuilder();
        var inWord = false;
        for (var i = 0; i < commandLine.Length; i++)
        {
            var c = commandLine[i];
            switch (c)
            {
                case ' ' or '\t' or '\n' or '\r':
                    if (inWord)
                    {
                        args.Add(current.ToString());
                        current.Clear();
                        inWord = false;
                    }

                    break;
                case '\'':
                    inWord = true;
                    var close = commandLine.IndexOf('\'', i + 1);
                    if (close < 0)
                    {
                        throw new FormatException($"unterminated single quote at position {i + 1}");
                    }

                    current.Append(commandLine, i + 1, close - i - 1);
                    i = close;
                    break;
                case '"':
                    inWord = true;
                    i = ReadDoubleQuoted(commandLine, i, current);
                    break;
                case '\\':
                    inWord = true;
                    if (i + 1 < commandLine.Length)
                    {
                        i++;
                        if (commandLine[i] != '\n')
                        {
                            current.Append(commandLine[i]);
                        }
                    }

                    break;
                default:
                    inWord = true;
                    current.Append(c);
                    break;
            }
        }

        if (inWord)
        {
            args.Add(current.ToString());
        }

        return args;
    }

    /// <summary>Quotes arguments for display (error messages, logs), so the command can be copied into a shell.</summary>
    public static string Quote(IEnumerable<string> args) => string.Join(' ', args.Select(Quote));

    public static string Quote(string arg) =>
        arg.Length > 0 && arg.All(c => char.IsAsciiLetterOrDigit(c) || "-_./=:,+@%".Contains(c))
            ? arg
            : "'" + arg.Replace("'", "'\\''", StringComparison.Ordinal) + "'";

    private static int ReadDoubleQuoted(string text, int open, StringBuilder current)
    {
        for (var i = open + 1; i < text.Length; i++)
        {
            var c = text[i];
            if (c == '"')
            {
                return i;
            }

            if (c == '\\' && i + 1 < text.Length && text[i + 1] is '"' or '\\' or '$' or '`' or '\n')
            {
                i++;
                if (text[i] != '\n')
                {
                    current.Append(text[i]);
                }

                continue;
            }

            current.Append(c);
        }

        throw new FormatException($"unterminated double quote at position {open + 1}");
    }
}
