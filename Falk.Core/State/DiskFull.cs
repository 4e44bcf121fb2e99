using Microsoft.Data.Sqlite;

namespace Falk.Core.State;

/// <summary>Tells a full disk (or an exhausted quota) apart from other failures to write, wherever it surfaces.</summary>
public static class DiskFull
{
    private const int Enospc = 28;
    private const int Edquot = 122;
    private const int SqliteFull = 13;

    /// <summary>Whether <paramref name="exception"/>, or one it wraps, says there is no space left.</summary>
    public static bool Is(Exception? exception)
    {
        for (var e = exception; e is not null; e = e.InnerException)
        {
            switch (e)
            {
                case SqliteException { SqliteErrorCode: SqliteFull }:
                    return true;
                case IOException io when (io.HResult & 0xFFFF) is Enospc or Edquot:
                    return true;
                case AggregateException aggregate when aggregate.InnerExceptions.Any(Is):
                    return true;
            }
        }

        return false;
    }
}
