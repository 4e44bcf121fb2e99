namespace Falk.Core.Machines;

/// <summary>Who asks: the peer's uid (from the socket's credentials) and whether it is an admin.</summary>
public sealed record Caller(int Uid, bool IsAdmin)
{
    /// <summary>The daemon itself (lease expiry, shutdown).</summary>
    public static Caller Daemon { get; } = new(-1, true);
}
