using System.Text.Json.Nodes;

namespace Falk.Tests.Cli;

/// <summary>What the falk command ships: the client side of the API, none of the daemon.</summary>
public sealed class FalkPackagingTests
{
    [Fact(Timeout = 10_000)]
    public async Task The_falk_command_depends_on_nothing_of_the_daemon()
    {
        // falk.deps.json is the command's own dependency list, copied next to the tests with falk.dll.
        var deps = JsonNode.Parse(await File.ReadAllTextAsync(Path.Combine(AppContext.BaseDirectory, "falk.deps.json"), TestContext.Current.CancellationToken))!;

        var libraries = deps["libraries"]!.AsObject().Select(l => l.Key.Split('/')[0]).ToList();

        libraries.Should().Contain("Falk.Client");
        libraries.Should().NotContain(l => l == "Falk.Core" || l == "falkd" || l.StartsWith("Docker.DotNet", StringComparison.Ordinal)
            || l == "SSH.NET" || l.Contains("Sqlite", StringComparison.OrdinalIgnoreCase) || l.StartsWith("Microsoft.AspNetCore", StringComparison.Ordinal));
    }
}
