namespace Falk.Cli;

/// <summary>falk's exit codes (a command run in a machine passes its own through).</summary>
public static class ExitCodes
{
    public const int Ok = 0;

    /// <summary>The daemon answered with an error (the problem's title and detail are printed).</summary>
    public const int ApiError = 1;

    /// <summary>Bad arguments.</summary>
    public const int Usage = 2;

    /// <summary>No daemon answers on the socket.</summary>
    public const int DaemonUnreachable = 3;

    /// <summary>ssh itself failed (it exits 255).</summary>
    public const int SshFailed = 255;

    /// <summary>Interrupted by Ctrl-C (SIGINT) or SIGTERM; whatever was made has been deleted.</summary>
    public const int Interrupted = 130;
}
