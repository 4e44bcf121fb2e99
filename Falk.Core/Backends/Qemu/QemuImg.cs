using System.Text.Json;
using System.Text.Json.Nodes;
using Falk.Core.Machines;
using Falk.Core.Processes;

namespace Falk.Core.Backends.Qemu;

/// <summary>The <c>qemu-img</c> operations Falk uses, each one process with an argument list.</summary>
public sealed class QemuImg(IProcessRunner runner)
{
    public const string Program = "qemu-img";

    private static readonly TimeSpan QuickTimeout = TimeSpan.FromSeconds(60);

    /// <summary>Merging a whole disk into a new file may take a while for a big image.</summary>
    private static readonly TimeSpan ConvertTimeout = TimeSpan.FromHours(2);

    /// <summary>A copy-on-write overlay of <paramref name="backing"/> (an absolute path, recorded in the overlay as it is).</summary>
    public Task CreateOverlayAsync(string overlay, string backing, CancellationToken cancellationToken) =>
        RunAsync([Program, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing, overlay], QuickTimeout, cancellationToken);

    /// <summary>
    /// Points <paramref name="overlay"/> at another backing file without copying anything: right only for an overlay
    /// that holds no data yet (a machine's fresh overlay moved onto the layer a saved guest ran on).
    /// </summary>
    public Task RebaseUnsafeAsync(string overlay, string backing, CancellationToken cancellationToken) =>
        RunAsync([Program, "rebase", "-q", "-u", "-f", "qcow2", "-F", "qcow2", "-b", backing, overlay], QuickTimeout, cancellationToken);

    /// <summary>The image with everything under it (its backing chain) merged into a new standalone qcow2 file.</summary>
    public Task ConvertAsync(string source, string destination, CancellationToken cancellationToken) =>
        RunAsync([Program, "convert", "-q", "-O", "qcow2", source, destination], ConvertTimeout, cancellationToken);

    public Task CreateSnapshotAsync(string image, string name, CancellationToken cancellationToken) =>
        RunAsync([Program, "snapshot", "-q", "-c", name, image], QuickTimeout, cancellationToken);

    public Task ApplySnapshotAsync(string image, string name, CancellationToken cancellationToken) =>
        RunAsync([Program, "snapshot", "-q", "-a", name, image], QuickTimeout, cancellationToken);

    public Task DeleteSnapshotAsync(string image, string name, CancellationToken cancellationToken) =>
        RunAsync([Program, "snapshot", "-q", "-d", name, image], QuickTimeout, cancellationToken);

    /// <summary>The snapshots inside <paramref name="image"/>, from <c>qemu-img info --output=json</c>.</summary>
    public async Task<IReadOnlyList<SnapshotInfo>> ListSnapshotsAsync(string image, CancellationToken cancellationToken)
    {
        // The runner keeps only output tails; the whole document is collected line by line. Warnings on stderr
        // start with the program's name and are left out.
        var lines = new System.Collections.Concurrent.ConcurrentQueue<string>();
        await RunAsync([Program, "info", "--force-share", "--output=json", image], QuickTimeout, cancellationToken, lines.Enqueue).ConfigureAwait(false);
        JsonNode? info;
        try
        {
            info = JsonNode.Parse(string.Join('\n', lines.Where(l => !l.StartsWith(Program + ":", StringComparison.Ordinal))));
        }
        catch (JsonException e)
        {
            throw new BackendOperationException($"`{Program} info {image}` printed no JSON: {e.Message}", e);
        }

        return ParseSnapshots(info?["snapshots"] as JsonArray);
    }

    /// <summary>Reads QEMU's snapshot records (<c>qemu-img info</c>'s and <c>query-block</c>'s share one shape).</summary>
    public static IReadOnlyList<SnapshotInfo> ParseSnapshots(JsonArray? snapshots) =>
        snapshots is null
            ? []
            : snapshots.OfType<JsonObject>().Select(s =>
            {
                var memory = s["vm-state-size"]?.GetValue<long>() ?? 0;
                var created = DateTimeOffset.FromUnixTimeSeconds(s["date-sec"]?.GetValue<long>() ?? 0)
                    .AddTicks((s["date-nsec"]?.GetValue<long>() ?? 0) / 100);
                return new SnapshotInfo(s["name"]?.GetValue<string>() ?? string.Empty, created, memory, memory > 0);
            }).ToList();

    private async Task RunAsync(IReadOnlyList<string> command, TimeSpan timeout, CancellationToken cancellationToken, Action<string>? onLine = null)
    {
        var spec = new ProcessSpec(command) { OnOutputLine = onLine };
        try
        {
            await runner.RunAsync(spec, timeout, cancellationToken).ConfigureAwait(false);
        }
        catch (ProcessFailedException e)
        {
            throw new BackendOperationException(e.Message, e);
        }
    }
}
