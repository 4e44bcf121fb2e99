using System.Net.Sockets;
using Falk.Core.Processes;
using Falk.Core.Waiting;

namespace Falk.Tests.Fixtures;

/// <summary>Starts a falkd of this build on a config and waits until it answers. Compiled into the tests and, linked, into the benchmarks: the falk command ships none of the daemon.</summary>
public static class LocalFalkd
{
    /// <summary>The falkd program copied next to the calling program by its project reference.</summary>
    public static string Executable => Path.Combine(AppContext.BaseDirectory, "falkd");

    /// <summary>Starts falkd and waits until <c>/healthz</c> answers on <paramref name="client"/>; the caller owns the process.</summary>
    /// <param name="environment">Added to falkd's environment (e.g. <c>DOTNET_gcServer</c> for a benchmark's variant).</param>
    /// <param name="executable">Another falkd build than the one next to the caller.</param>
    /// <param name="poll">How often <c>/healthz</c> is asked; 50 ms unless given.</param>
    public static async Task<RunningProcess> StartAsync(string configPath, HttpClient client, Action<string>? onOutput, CancellationToken cancellationToken,
        IReadOnlyDictionary<string, string?>? environment = null, TimeSpan? poll = null, string? executable = null)
    {
        var process = RunningProcess.Start(new ProcessSpec([executable ?? Executable, "--config", configPath])
        {
            OnOutputLine = onOutput,
            Environment = environment ?? new Dictionary<string, string?>(),
        });
        try
        {
            await Wait.UntilAsync(
                async ct =>
                {
                    if (process.HasExited)
                    {
                        throw new InvalidOperationException($"falkd exited with code {process.Exited.Result}: {process.OutputTail()}");
                    }

                    try
                    {
                        using var response = await client.GetAsync("healthz", ct).ConfigureAwait(false);
                        return response.IsSuccessStatusCode ? ProbeOutcome.Done(true) : ProbeOutcome.NotYet<bool>($"healthz: {response.StatusCode}");
                    }
                    catch (HttpRequestException e) when (e.InnerException is SocketException)
                    {
                        return ProbeOutcome.NotYet<bool>(e.Message);
                    }
                },
                poll ?? TimeSpan.FromMilliseconds(50),
                TimeSpan.FromSeconds(30),
                "falkd answering",
                cancellationToken).ConfigureAwait(false);
            return process;
        }
        catch
        {
            await process.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }
}
