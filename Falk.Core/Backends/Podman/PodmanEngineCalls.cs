using Falk.Core.Backends.Podman.Engine;
using Falk.Core.Machines;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Backends.Podman;

/// <summary>Engine calls made for one machine: a refusal becomes a <see cref="BackendOperationException"/> naming the machine and the operation.</summary>
internal sealed class PodmanEngineCalls(string machineId, ILogger logger)
{
    public async Task RunAsync(string operation, Func<Task> action) =>
        await RunAsync<bool>(operation, async () =>
        {
            await action().ConfigureAwait(false);
            return true;
        }).ConfigureAwait(false);

    public async Task<T> RunAsync<T>(string operation, Func<Task<T>> action)
    {
        try
        {
            return await action().ConfigureAwait(false);
        }
        catch (PodmanApiException e)
        {
            PodmanLog.OperationFailed(logger, machineId, operation, e.Message);
            throw new BackendOperationException($"podman could not {operation} machine {machineId}: {e.Message}", e);
        }
    }
}
