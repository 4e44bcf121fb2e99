using System.Globalization;
using Microsoft.Extensions.Configuration;

namespace Falk.Core.Config;

/// <summary>
/// Typed access to one INI section. Every problem becomes one line
/// <c>FILE: [SECTION] KEY: what is wrong</c>; keys never read are reported as unknown.
/// </summary>
public sealed class SectionReader
{
    private readonly IConfigurationSection _section;
    private readonly HashSet<string> _read = new(StringComparer.OrdinalIgnoreCase);
    private readonly List<string> _errors;

    internal SectionReader(string configPath, IConfigurationSection section, List<string> errors)
    {
        ConfigPath = configPath;
        _section = section;
        _errors = errors;
    }

    public string ConfigPath { get; }

    /// <summary>Folder of the config file; relative paths in it are relative to this.</summary>
    public string ConfigDirectory => Path.GetDirectoryName(Path.GetFullPath(ConfigPath)) ?? "/";

    public string Section => _section.Key;

    public int ErrorCount => _errors.Count;

    public void Error(string key, string message) => _errors.Add($"{ConfigPath}: [{Section}] {key}: {message}");

    public bool Has(string key) => Text(key) is not null;

    /// <summary>The value, trimmed, or null when the key is absent or empty.</summary>
    public string? Text(string key)
    {
        _read.Add(key);
        var value = _section[key]?.Trim();
        return string.IsNullOrEmpty(value) ? null : value;
    }

    public string Text(string key, string fallback) => Text(key) ?? fallback;

    public string? Required(string key)
    {
        var value = Text(key);
        if (value is null)
        {
            Error(key, "is required");
        }

        return value;
    }

    public int? Number(string key, int min, int max)
    {
        var text = Text(key);
        if (text is null)
        {
            return null;
        }

        if (!int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var value) || value < min || value > max)
        {
            Error(key, $"'{text}' is not a whole number from {min} to {max}");
            return null;
        }

        return value;
    }

    public bool? Bool(string key)
    {
        var text = Text(key);
        switch (text?.ToLowerInvariant())
        {
            case null:
                return null;
            case "1" or "yes" or "true" or "on":
                return true;
            case "0" or "no" or "false" or "off":
                return false;
            default:
                Error(key, $"'{text}' is not a boolean (use yes/no, true/false, on/off or 1/0)");
                return null;
        }
    }

    /// <summary>A path; relative paths are taken relative to the config file's folder.</summary>
    public string? FilePath(string key)
    {
        var text = Text(key);
        return text is null ? null : Path.GetFullPath(text, ConfigDirectory);
    }

    /// <summary>A comma- or space-separated list.</summary>
    public IReadOnlyList<string> List(string key) =>
        Text(key)?.Split([',', ' ', '\t'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) ?? [];

    /// <summary>Keys present in the section that nothing asked for.</summary>
    public IEnumerable<string> UnreadKeys() =>
        _section.GetChildren().Select(c => c.Key).Where(k => !_read.Contains(k));
}
