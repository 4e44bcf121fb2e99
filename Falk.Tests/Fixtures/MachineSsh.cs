using System.Text.Json.Nodes;
using Renci.SshNet;

namespace Falk.Tests.Fixtures;

/// <summary>Logs in to a machine as a CI job would: the user's key, and only the host key the API gave.</summary>
public static class MachineSsh
{
    public static async Task<string> RunAsync(JsonNode machine, string user, string clientKeyPath, string commandText, CancellationToken ct)
    {
        var ssh = machine["ssh"]!;
        var host = ssh["host"]!.GetValue<string>();
        var port = ssh["port"]!.GetValue<int>();
        var pinned = ssh["known_host_key"]!.GetValue<string>().Split(' ')[1];
        var connection = new ConnectionInfo(host, port, user, new PrivateKeyAuthenticationMethod(user, new PrivateKeyFile(clientKeyPath)));
        using var client = new SshClient(connection);
        client.HostKeyReceived += (_, e) => e.CanTrust = Convert.ToBase64String(e.HostKey) == pinned;
        await client.ConnectAsync(ct);
        using var command = client.RunCommand(commandText);
        command.ExitStatus.Should().Be(0, command.Error);
        return command.Result.Trim();
    }
}
