using System.Diagnostics;
using System.Text.Json.Nodes;

namespace Falk.Cli;

/// <summary>Runs the system's ssh against a machine, trusting exactly the host key the daemon pinned.</summary>
public static class Ssh
{
    /// <summary>
    /// Opens a session (a real terminal with -t when there is one and no command) or runs <paramref name="command"/>;
    /// returns ssh's exit code, which is the remote command's.
    /// </summary>
    public static async Task<int> RunAsync(JsonNode ssh, IReadOnlyList<string> command, string? identity, SignalGate signals)
    {
        var knownHosts = Path.Combine(Path.GetTempPath(), $"falk-known-hosts-{Guid.NewGuid():N}");
        await File.WriteAllTextAsync(knownHosts, (ssh["known_hosts_line"]?.GetValue<string>() ?? string.Empty) + "\n");
        try
        {
            var info = new ProcessStartInfo("ssh") { UseShellExecute = false };
            string[] options =
            [
                "-o", $"UserKnownHostsFile={knownHosts}",
                "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes",
                "-o", "LogLevel=ERROR",
                "-p", ssh["port"]!.ToString(),
            ];
            foreach (var option in options)
            {
                info.ArgumentList.Add(option);
            }

            if (identity is not null)
            {
                info.ArgumentList.Add("-i");
                info.ArgumentList.Add(identity);
                info.ArgumentList.Add("-o");
                info.ArgumentList.Add("IdentitiesOnly=yes");
            }

            var interactive = command.Count == 0 && !Console.IsInputRedirected && !Console.IsOutputRedirected;
            info.ArgumentList.Add(interactive ? "-t" : "-T");
            info.ArgumentList.Add($"{ssh["user"]}@{ssh["host"]}");
            if (command.Count > 0)
            {
                info.ArgumentList.Add("--");
                info.ArgumentList.Add(RemoteCommand.Join(command));
            }

            using var process = Process.Start(info) ?? throw new InvalidOperationException("ssh did not start");
            signals.Forwarding = true;
            try
            {
                await process.WaitForExitAsync(signals.Token);
            }
            catch (OperationCanceledException)
            {
                // SIGTERM: end the session too.
                process.Kill(entireProcessTree: true);
                throw;
            }
            finally
            {
                signals.Forwarding = false;
            }

            return process.ExitCode;
        }
        finally
        {
            File.Delete(knownHosts);
        }
    }
}
