using System.Text.Json.Nodes;

namespace Falk.Core.Backends.Qemu.Qmp;

/// <summary>An asynchronous QMP event (<c>SHUTDOWN</c>, <c>POWERDOWN</c>, <c>STOP</c>, <c>RESUME</c>, <c>JOB_STATUS_CHANGE</c> …).</summary>
/// <param name="Data">The event's <c>data</c> object, or null when it has none.</param>
public sealed record QmpEvent(string Name, JsonObject? Data, DateTimeOffset Timestamp)
{
    public const string Shutdown = "SHUTDOWN";
    public const string Powerdown = "POWERDOWN";
    public const string Stop = "STOP";
    public const string Resume = "RESUME";
    public const string JobStatusChange = "JOB_STATUS_CHANGE";

    /// <summary>For <c>SHUTDOWN</c>: why (<c>guest-shutdown</c>, <c>guest-panic</c>, <c>host-qmp-quit</c> …).</summary>
    public string? Reason => Data?["reason"]?.GetValue<string>();
}
