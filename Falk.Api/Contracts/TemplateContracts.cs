using Falk.Core.Backends;
using Falk.Core.Config;

namespace Falk.Api.Contracts;

/// <summary>A configured machine kind.</summary>
/// <param name="Id">The config section id.</param>
/// <param name="Name">What a client asks for in <c>POST /v1/machines</c>.</param>
/// <param name="HostKeySource">
/// Where its machines' SSH host key comes from: <c>config</c> (the template's <c>ssh_known_host_key</c>), <c>image</c> (none configured: read out
/// of the machine's image, podman) or <c>observed</c> (whatever the server shows: not verified). Machines say the same in <c>ssh.host_key_source</c>.
/// </param>
/// <param name="HostKeyVerified">True when readiness checks the key (<c>config</c> or <c>image</c>), false for <c>observed</c>.</param>
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
        // A configured key wins; podman reads one out of the image only when none is configured.
        var source = t.KnownHostKeys.Count > 0 ? HostKeySource.Config
            : BackendModules.Descriptors.Any(d => d.Type == t.Type && d.ReadsHostKeyFromImage) ? HostKeySource.Image
            : HostKeySource.Observed;
        return new(t.Id, t.Name, t.Type, t.SshUser, t.SshHost, t.ManageSupported, source, source != HostKeySource.Observed);
    }
}
