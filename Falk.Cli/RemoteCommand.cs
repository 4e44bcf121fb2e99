namespace Falk.Cli;

/// <summary>ssh hands the remote shell one string: each argument is quoted so it arrives as it was given.</summary>
public static class RemoteCommand
{
    public static string Join(IReadOnlyList<string> args) => string.Join(' ', args.Select(QuoteForShell));

    /// <summary>POSIX shell quoting: plain words stay as they are, anything else goes in single quotes.</summary>
    private static string QuoteForShell(string word)
    {
        var plain = word.Length > 0 && word.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or '/' or '=' or ':' or ',' or '@');
        return plain ? word : $"'{word.Replace("'", @"'\''", StringComparison.Ordinal)}'";
    }
}
