using System.Text;

namespace Falk.Api.Protocol;

/// <summary>POSIX shell word splitting and quoting, as Python's <c>shlex.split</c> and <c>shlex.quote</c> do them.</summary>
internal static class ShellWords
{
    /// <summary>The words of <paramref name="line"/>; at least one (blank lines are skipped before).</summary>
    public static List<string> Split(string line)
    {
        var words = new List<string>();
        var word = new StringBuilder();
        var inWord = false;
        for (var i = 0; i < line.Length; i++)
        {
            var c = line[i];
            switch (c)
            {
                case ' ' or '\t' or '\r' or '\n' or '\v' or '\f':
                    if (inWord)
                    {
                        words.Add(word.ToString());
                        word.Clear();
                        inWord = false;
                    }

                    break;
                case '\'':
                    inWord = true;
                    var close = line.IndexOf('\'', i + 1);
                    if (close < 0)
                    {
                        throw new ProtocolParseException("ValueError('No closing quotation')");
                    }

                    word.Append(line, i + 1, close - i - 1);
                    i = close;
                    break;
                case '"':
                    inWord = true;
                    for (i++; ; i++)
                    {
                        if (i >= line.Length)
                        {
                            throw new ProtocolParseException("ValueError('No closing quotation')");
                        }

                        if (line[i] == '"')
                        {
                            break;
                        }

                        if (line[i] == '\\' && i + 1 < line.Length && line[i + 1] is '\\' or '"' or '$' or '`' or '\n')
                        {
                            i++;
                        }

                        word.Append(line[i]);
                    }

                    break;
                case '\\':
                    inWord = true;
                    if (++i >= line.Length)
                    {
                        throw new ProtocolParseException("ValueError('No escaped character')");
                    }

                    word.Append(line[i]);
                    break;
                default:
                    inWord = true;
                    word.Append(c);
                    break;
            }
        }

        if (inWord)
        {
            words.Add(word.ToString());
        }

        return words;
    }

    /// <summary>The value as one shell word: as it is when it holds only safe characters, else in single quotes.</summary>
    public static string Quote(string value) =>
        value.Length == 0 ? "''"
        : value.All(c => char.IsAsciiLetterOrDigit(c) || "@%+=:,./-_".Contains(c, StringComparison.Ordinal)) ? value
        : "'" + value.Replace("'", "'\"'\"'", StringComparison.Ordinal) + "'";
}
