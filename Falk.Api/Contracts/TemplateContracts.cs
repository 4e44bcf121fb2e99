using Falk.Core.Backends;
using Falk.Core.Config;

namespace Falk.Api.Contracts;

/// <summary>A configured machine kind.</summary>
/// <param name="Id">The config section id.</param>
/// <param name="Name">What a client asks for in <c>POST /v1/machines</c>.</param>
/// <param name="HostKeySource">
/// Where its machines' SSH host key comes from: <c>config</c> (the template's <c>ssh_known_host_key</c>), <c>machine</c> (none configured: a key
/// made for each machine at create, podman), <c>image</c> (none configured: read out of the machine's image, LXD, or podman with
/// <c>host_key = image</c>) or <c>observed</c> (whatever the server shows: not verified). Machines say the same in <c>ssh.host_key_source</c>.
/// </param>
/// <param name="SshHost">The literal address machines answer SSH on: the config's <c>ssh_host</c> resolved once, at load (<c>localhost</c> is 127.0.0.1).</param>
/// <param name="HostKeyVerified">True when readiness checks the key (<c>config</c>, <c>machine</c> or <c>image</c>), false for <c>observed</c>.</param>
public sealed record TemplateResponse(
    string Id,
    string Name,
    string Type,
    string SshUser,
    string SshHost,
    bool ManageSupported,
    HostKeySource HostKeySource,
    bool HostKeyVerified)
{
    public static TemplateResponse From(TemplateDefinition t)
    {
        // A configured key wins; podman (a key per machine, or the image's) and LXD (the image's) pin their own only when none is configured.
        var source = t.KnownHostKeys.Count > 0 ? HostKeySource.Config
            : BackendModules.Descriptors.FirstOrDefault(d => d.Type == t.Type)?.PinnedKeySource is { } pinned ? HostKeySourceWire.FromCore(pinned(t.BackendOptions))
            : HostKeySource.Observed;
        return new(t.Id, t.Name, t.Type, t.SshUser, t.SshHost, t.ManageSupported, source, source != HostKeySource.Observed);
    }
}
