using System.Text.Json.Nodes;

namespace Falk.Cli;

/// <summary>What <c>falk manage</c> and <c>falk run</c> were asked to do.</summary>
/// <param name="Commit">true: commit without asking; false: discard; null: ask on a terminal, else discard.</param>
/// <param name="WaitStoppedSeconds">How long to wait after the session for the guest to power off by itself before committing.</param>
public sealed record ManageOptions(
    string Template,
    bool Volatile,
    bool? Commit,
    IReadOnlyList<string> Command,
    string? Identity,
    int WaitStoppedSeconds,
    int LeaseSeconds);

/// <summary>
/// A management (or throwaway) session: create, boot until SSH answers, shell or command, then wait for the guest,
/// commit or discard, and delete the machine — always, also on Ctrl-C, so nothing is left behind.
/// </summary>
public sealed class ManageSession(FalkApi api, Output output, SignalGate signals)
{
    public async Task<int> RunAsync(ManageOptions options)
    {
        var ct = signals.Token;
        string? id = null;
        try
        {
            // Subscribed before anything is made, so the boot's progress is told from its first step.
            using var events = await api.OpenEventsAsync(ct);
            var kind = options.Volatile ? "a throwaway copy" : "a management machine";
            var machine = await output.StepAsync($"creating {kind} of {options.Template}", _ =>
                api.PostAsync("v1/machines", new { template = options.Template, manage = !options.Volatile, lease_seconds = options.LeaseSeconds }, ct));
            id = machine["id"]!.GetValue<string>();
            using var renewing = CancellationTokenSource.CreateLinkedTokenSource(ct);
            var renewal = RenewLeaseAsync(id, options.LeaseSeconds, renewing.Token);

            await output.StepAsync($"booting {id} and waiting for SSH", status => BootAsync(id, events, status, ct));
            var ssh = await api.GetAsync($"v1/machines/{id}/ssh", ct);
            var exitCode = await Ssh.RunAsync(ssh, options.Command, options.Identity, signals);

            if (!options.Volatile)
            {
                await WaitForPowerOffAsync(id, options.WaitStoppedSeconds, ct);
                if (options.Commit ?? Ask($"Commit changes to {options.Template}?"))
                {
                    var result = await output.StepAsync($"committing {id} as the new image of {options.Template}", _ =>
                        api.PostAsync($"v1/machines/{id}/commit", new { timeout_seconds = 30 }, ct));
                    Output.Info($"{options.Template} is now version {result["version"]}");
                }
                else
                {
                    Output.Info($"changes discarded; {options.Template} is unchanged");
                }
            }

            await renewing.CancelAsync();
            await renewal;
            return exitCode;
        }
        catch (OperationCanceledException) when (signals.Interrupted)
        {
            Output.Error("interrupted");
            return ExitCodes.Interrupted;
        }
        finally
        {
            if (id is not null)
            {
                // Never left behind, whatever happened above: the daemon's delete is idempotent.
                await output.StepAsync($"deleting {id}", _ => api.DeleteAsync($"v1/machines/{id}", CancellationToken.None));
            }
        }
    }

    private async Task<JsonNode> BootAsync(string id, EventSubscription events, Action<string> status, CancellationToken ct)
    {
        // The event stream tells how far the boot has come while the request waits for SSH.
        using var watching = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var watcher = Task.Run(async () =>
        {
            try
            {
                await foreach (var e in events.ReadAllAsync(watching.Token))
                {
                    if (e["machine_id"]?.GetValue<string>() == id && e["type"]?.GetValue<string>() is { } type and not "created")
                    {
                        status(type switch
                        {
                            "booting" => "starting",
                            "ready" => "SSH answers with the pinned host key",
                            "running" => "running",
                            "paused" => "paused from outside falk (a QEMU monitor's stop): waiting for it to run again",
                            var other => other,
                        });
                    }
                }
            }
            catch (Exception e) when (e is OperationCanceledException or IOException or HttpRequestException)
            {
                // Progress is a nicety; the boot answer is what counts.
            }
        }, CancellationToken.None);

        try
        {
            return await api.PostAsync($"v1/machines/{id}/boot?wait=ssh&timeout=600", null, ct);
        }
        finally
        {
            await watching.CancelAsync();
            await watcher;
        }
    }

    private async Task WaitForPowerOffAsync(string id, int seconds, CancellationToken ct)
    {
        if (seconds <= 0)
        {
            return;
        }

        try
        {
            await output.StepAsync($"waiting up to {seconds} s for {id} to power off", _ =>
                api.PostAsync($"v1/machines/{id}/wait?condition=stopped&timeout={seconds}", null, ct));
        }
        catch (FalkApiException e) when (e.Status == 504)
        {
            Output.Info("the guest is still running; the commit shuts it down");
        }
    }

    private async Task RenewLeaseAsync(string id, int leaseSeconds, CancellationToken ct)
    {
        var every = TimeSpan.FromSeconds(Math.Max(1, leaseSeconds / 3));
        try
        {
            while (true)
            {
                await Task.Delay(every, ct);
                await api.PutAsync($"v1/machines/{id}/lease", new { seconds = leaseSeconds }, ct);
            }
        }
        catch (OperationCanceledException)
        {
            // The session is over.
        }
        catch (Exception e) when (e is FalkApiException or DaemonUnreachableException)
        {
            Output.Error($"could not renew the lease of {id}: {e.Message}");
        }
    }

    private static bool Ask(string question)
    {
        if (Console.IsInputRedirected)
        {
            return false;
        }

        Console.Error.Write($"{question} [y/N] ");
        return Console.ReadLine()?.Trim().ToLowerInvariant() is "y" or "yes";
    }
}
