namespace Falk.Core.Config;

/// <summary>
/// What the config loader needs to know of a backend before any service exists:
/// its type name and how to read the backend's own keys of a template section.
/// </summary>
/// <param name="Type">The <c>type =</c> value, e.g. <c>custom</c>.</param>
/// <param name="ParseOptions">Reads the backend's keys; reports problems through the reader and returns null on error.</param>
/// <param name="SupportsManage">Whether templates of this type can run in management mode.</param>
/// <param name="ParseDaemonOptions">
/// Reads the backend's own keys of the <c>[falk]</c> section (e.g. an engine socket), or null when it has none;
/// the result is in <see cref="DaemonOptions.BackendOptions"/> under <paramref name="Type"/>.
/// </param>
/// <param name="PinnedKeySource">
/// Where a template without a configured host key still gets one pinned from (a <see cref="Machines.HostKeySources"/>
/// value: <c>machine</c> for a key made per machine, <c>image</c> for one read out of the image), given the template's
/// backend options; null when such a template's keys are only observed.
/// </param>
/// <param name="DynamicSshHost">
/// An <c>ssh_host</c> value the backend reads as "learned at launch" (LXD's <c>__dynamic__</c>): kept as it is, not resolved.
/// </param>
public sealed record BackendDescriptor(
    string Type,
    Func<SectionReader, object?> ParseOptions,
    bool SupportsManage,
    Func<SectionReader, object?>? ParseDaemonOptions = null,
    Func<object, string>? PinnedKeySource = null,
    string? DynamicSshHost = null);
