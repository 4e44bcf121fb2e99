using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using Falk.Core.Backends.Qemu.Qmp;
using Falk.Core.Machines;

namespace Falk.Core.Backends.Qemu;

/// <summary>
/// The QMP connection of one machine. QMP and HMP failures come out as the machine's
/// <see cref="BackendOperationException"/>; commands that are expected to fail while QEMU exits can be tried quietly.
/// </summary>
internal sealed class QemuMonitor(QmpClient qmp, string machineId) : IAsyncDisposable
{
    public ChannelReader<QmpEvent> Events => qmp.Events;

    public Task<JsonNode?> ExecuteAsync(string command, CancellationToken cancellationToken) => ExecuteAsync(command, null, null, cancellationToken);

    /// <summary>A command with arguments; with <paramref name="file"/> the command carries that open file (for <c>getfd</c>).</summary>
    public async Task<JsonNode?> ExecuteAsync(string command, JsonObject? arguments, SafeHandle? file, CancellationToken cancellationToken)
    {
        try
        {
            return await qmp.ExecuteAsync(command, arguments, file, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is QmpErrorException or QmpConnectionException)
        {
            throw new BackendOperationException($"machine {machineId}: {e.Message}", e);
        }
    }

    /// <summary>A command whose failure is expected when QEMU is on its way out (powerdown, quit).</summary>
    public async Task TryExecuteAsync(string command, CancellationToken cancellationToken)
    {
        try
        {
            await qmp.ExecuteAsync(command, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is QmpErrorException or QmpConnectionException)
        {
            // QEMU is exiting or already gone; the process exit tells.
        }
    }

    /// <summary>HMP reports failures as text: a command that prints anything failed.</summary>
    public async Task HumanMonitorAsync(string commandLine, CancellationToken cancellationToken)
    {
        string output;
        try
        {
            output = await qmp.HumanMonitorCommandAsync(commandLine, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is QmpErrorException or QmpConnectionException)
        {
            throw new BackendOperationException($"machine {machineId}: {commandLine}: {e.Message}", e);
        }

        if (!string.IsNullOrWhiteSpace(output))
        {
            throw new BackendOperationException($"machine {machineId}: {commandLine} failed: {output.Trim()}");
        }
    }

    /// <summary>Whether the guest is paused (status <c>paused</c>); false when QEMU no longer answers, since it is ending.</summary>
    public async Task<bool> IsPausedAsync(CancellationToken cancellationToken)
    {
        try
        {
            return (await qmp.ExecuteAsync("query-status", cancellationToken).ConfigureAwait(false))?["status"]?.GetValue<string>() == "paused";
        }
        catch (Exception e) when (e is QmpErrorException or QmpConnectionException)
        {
            return false;
        }
    }

    public ValueTask DisposeAsync() => qmp.DisposeAsync();
}
