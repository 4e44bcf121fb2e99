namespace Falk.Core.Config;

/// <summary>
/// What the config loader needs to know of a backend before any service exists:
/// its type name and how to read the backend's own keys of a template section.
/// </summary>
/// <param name="Type">The <c>type =</c> value, e.g. <c>custom</c>.</param>
/// <param name="ParseOptions">Reads the backend's keys; reports problems through the reader and returns null on error.</param>
/// <param name="SupportsManage">Whether templates of this type can run in management mode.</param>
public sealed record BackendDescriptor(
    string Type,
    Func<SectionReader, object?> ParseOptions,
    bool SupportsManage);
