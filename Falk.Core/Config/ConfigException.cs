namespace Falk.Core.Config;

/// <summary>
/// The config file cannot be used. Each entry of <see cref="Errors"/> is one readable line
/// naming the file, the section, the key and what is wrong.
/// </summary>
public sealed class ConfigException(IReadOnlyList<string> errors)
    : FalkException("config-invalid", string.Join(Environment.NewLine, errors))
{
    public IReadOnlyList<string> Errors { get; } = errors;

    public override string Title => "Invalid configuration";
}
