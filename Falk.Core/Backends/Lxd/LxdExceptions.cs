using System.Net;

namespace Falk.Core.Backends.Lxd;

/// <summary>The LXD (or Incus) daemon answered, and said no; or a background operation of it failed.</summary>
public sealed class LxdApiException(string operation, HttpStatusCode status, string message)
    : Exception($"{operation}: {message}")
{
    public HttpStatusCode Status { get; } = status;

    /// <summary>The daemon's own words, without the operation.</summary>
    public string DaemonMessage { get; } = message;

    public bool IsNotFound => Status == HttpStatusCode.NotFound;

    /// <summary>A stop of an instance that is not running (LXD answers 400 "The instance is already stopped").</summary>
    public bool IsAlreadyStopped => DaemonMessage.Contains("already stopped", StringComparison.OrdinalIgnoreCase);
}
