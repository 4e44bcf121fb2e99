using Falk.Core.Config;

namespace Falk.Api.Contracts;

/// <summary>A configured machine kind.</summary>
/// <param name="Id">The config section id.</param>
/// <param name="Name">What a client asks for in <c>POST /v1/machines</c>.</param>
/// <param name="HostKeyPinned">Whether the template pins the SSH host key (otherwise it is shown but not verified).</param>
public sealed record TemplateResponse(
    string Id,
    string Name,
    string Type,
    string SshUser,
    string SshHost,
    bool ManageSupported,
    bool HostKeyPinned)
{
    public static TemplateResponse From(TemplateDefinition t) =>
        new(t.Id, t.Name, t.Type, t.SshUser, t.SshHost, t.ManageSupported, t.KnownHostKeys.Count > 0);
}
