namespace Falk.Core.Backends.Qemu.Qmp;

/// <summary>QEMU answered a QMP command with an error: its class (e.g. <c>GenericError</c>) and description.</summary>
public sealed class QmpErrorException(string command, string errorClass, string description)
    : FalkException("qmp-error", $"QMP command '{command}' failed: {errorClass}: {description}")
{
    public string Command { get; } = command;

    public string ErrorClass { get; } = errorClass;

    public string Description { get; } = description;

    public override string Title => "QEMU refused a command";

    public override IReadOnlyDictionary<string, object?> Details => new Dictionary<string, object?>
    {
        ["qmp_command"] = Command,
        ["qmp_class"] = ErrorClass,
    };
}

/// <summary>The QMP connection ended (QEMU exited, the socket closed) or never spoke QMP; every pending command fails with this.</summary>
public sealed class QmpConnectionException(string message, Exception? inner = null)
    : FalkException("qmp-disconnected", message, inner)
{
    public override string Title => "QEMU control connection lost";
}
