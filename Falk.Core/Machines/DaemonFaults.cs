using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Machines;

/// <summary>
/// Background work that cannot go on: it is logged, the daemon stops, and its exit status (<see cref="ExitCode"/>)
/// is non-zero, so that a supervisor (systemd's <c>Restart=on-failure</c>) starts it again.
/// </summary>
public sealed class DaemonFaults(IHostApplicationLifetime lifetime, ILogger<MachineService> logger)
{
    private int _exitCode;

    /// <summary>0 while nothing failed for good, 1 after.</summary>
    public int ExitCode => Volatile.Read(ref _exitCode);

    public void Unrecoverable(string what, Exception exception)
    {
        MachineLog.Unrecoverable(logger, what, exception);
        Volatile.Write(ref _exitCode, 1);
        lifetime.StopApplication();
    }
}
