using System.Collections.Concurrent;
using Docker.DotNet.Models;
using Falk.Core.Machines;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Backends.Podman.Engine;

/// <summary>
/// Tells when containers stop, from the engine's own event stream: one subscription (the events of this daemon's
/// containers; <c>die</c>, <c>cleanup</c>, <c>remove</c> … make it look) for every machine. Podman 4.3's Docker-compatible <c>/containers/{id}/wait</c> polls the
/// container with a 1 ns interval and keeps a CPU core busy per waiting client (measured: ~100 % of a core), so
/// Falk does not hold one open per running machine. After the stream breaks (engine restarted), every watched
/// container is looked at again, so an exit during the outage is not missed.
/// </summary>
public sealed class PodmanExitWatch(PodmanEngine engine, IPodmanContainers containers, PodmanNaming naming, ILogger<PodmanExitWatch> logger) : IDisposable
{
    private static readonly TimeSpan Reconnect = TimeSpan.FromSeconds(1);

    private readonly ConcurrentDictionary<string, ConcurrentBag<TaskCompletionSource<long?>>> _waiters = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _stop = new();
    private readonly Lock _lock = new();
    private Task? _monitor;

    /// <summary>Completes with the exit code once the container is not running, or with null once it is gone.</summary>
    public async Task<long?> WaitForExitAsync(string containerId, CancellationToken cancellationToken)
    {
        EnsureMonitor();
        var waiter = new TaskCompletionSource<long?>(TaskCreationOptions.RunContinuationsAsynchronously);
        _waiters.GetOrAdd(containerId, _ => []).Add(waiter);
        try
        {
            // It may have stopped before the registration; this also surfaces an unreachable engine to the caller.
            await CheckAsync(containerId, cancellationToken).ConfigureAwait(false);
            return await waiter.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            waiter.TrySetCanceled(CancellationToken.None);
        }
    }

    public void Dispose()
    {
        _stop.Cancel();
        _stop.Dispose();
    }

    private void EnsureMonitor()
    {
        lock (_lock)
        {
            _monitor ??= Task.Run(() => MonitorAsync(_stop.Token));
        }
    }

    private async Task MonitorAsync(CancellationToken cancellationToken)
    {
        var parameters = new ContainerEventsParameters
        {
            Filters = new Dictionary<string, IDictionary<string, bool>>
            {
                ["type"] = new Dictionary<string, bool> { ["container"] = true },
                ["label"] = new Dictionary<string, bool> { [$"{PodmanLabels.Instance}={naming.Instance}"] = true },
            },
        };
        var events = new Events(id => _ = CheckQuietlyAsync(id, cancellationToken));
        var broken = false;
        while (!cancellationToken.IsCancellationRequested)
        {
            try
            {
                var stream = engine.CallAsync("follow container events",
                    (client, ct) => client.System.MonitorEventsAsync(parameters, events, ct), cancellationToken);
                if (broken)
                {
                    // Back after an outage: what stopped meanwhile sent its events to nobody.
                    foreach (var id in _waiters.Keys)
                    {
                        _ = CheckQuietlyAsync(id, cancellationToken);
                    }

                    broken = false;
                }

                await stream.ConfigureAwait(false);
            }
            catch (Exception e) when (e is BackendUnavailableException or PodmanApiException or IOException or HttpRequestException && !cancellationToken.IsCancellationRequested)
            {
                PodmanLog.EventsInterrupted(logger, e.Message);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }

            broken = true;
            try
            {
                await Task.Delay(Reconnect, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    private async Task CheckQuietlyAsync(string containerId, CancellationToken cancellationToken)
    {
        try
        {
            await CheckAsync(containerId, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is BackendUnavailableException or PodmanApiException or OperationCanceledException)
        {
            // The stream's reconnection looks again.
        }
    }

    private async Task CheckAsync(string containerId, CancellationToken cancellationToken)
    {
        if (!_waiters.TryGetValue(containerId, out var waiters))
        {
            return;
        }

        var status = await containers.InspectAsync(containerId, cancellationToken).ConfigureAwait(false);
        if (status is { Running: true } || (status is not null && status.Status is "created" or "configured" or "initialized"))
        {
            return;
        }

        if (_waiters.TryRemove(containerId, out waiters))
        {
            foreach (var waiter in waiters)
            {
                waiter.TrySetResult(status?.ExitCode);
            }
        }
    }

    /// <summary>Runs the handler on the reading thread: no reordering, no thread hop per event.</summary>
    private sealed class Events(Action<string> onContainerEvent) : IProgress<Message>
    {
        // Podman's event filter does not match its compat names ("die" is "died" inside); filter here.
        private static readonly HashSet<string> Ends = new(StringComparer.Ordinal) { "die", "died", "stop", "kill", "cleanup", "remove" };

        public void Report(Message value)
        {
            var id = value.Actor?.ID;
            if (!string.IsNullOrEmpty(id) && value.Action is not null && Ends.Contains(value.Action))
            {
                onContainerEvent(id);
            }
        }
    }
}
