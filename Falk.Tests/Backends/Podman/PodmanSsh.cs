using System.Text.Json.Nodes;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Backends.Podman;

/// <summary>Logs in to a podman machine as chantal, trusting only the host key the API gave.</summary>
internal static class PodmanSsh
{
    public static Task<string> RunAsync(JsonNode machine, PodmanTestImage image, string commandText, CancellationToken ct) =>
        MachineSsh.RunAsync(machine, PodmanTestImage.User, image.ClientKeyPath, commandText, ct);
}
