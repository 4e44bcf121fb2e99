using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using System.Text.Json.Nodes;
using Falk.Core.Config;
using Falk.Core.Machines;
using Falk.Core.Ssh;
using Microsoft.Extensions.Logging;

namespace Falk.Core.Backends.Lxd;

/// <summary>
/// Machines as LXD (or Incus) instances, made and driven through the daemon's REST API on its Unix socket (never the
/// <c>lxc</c> CLI). A machine is one instance named after it, marked with <c>user.falk.*</c> config keys, made from the
/// template's current image by fingerprint (so a later commit does not change it). It has no NIC of Falk's: a
/// <c>proxy</c> device listens on <c>ssh_host</c>:the machine's port and connects to port 22 inside; with
/// <c>ssh_host = __dynamic__</c> the profiles give it a network and SSH goes to the instance's own address.
/// </summary>
public sealed class LxdBackend : IMachineBackend
{
    /// <summary>The original's <c>ssh_host</c> for "the address the instance gets".</summary>
    public const string DynamicHost = "__dynamic__";

    public const string SshDevice = "falk-ssh";

    private readonly LxdClient _client;
    private readonly LxdImageStore _store;
    private readonly ILogger _logger;

    public LxdBackend(FalkConfig config, LxdClient client, LxdImageStore store, ILogger logger)
    {
        _client = client;
        _store = store;
        _logger = logger;
        foreach (var template in config.Templates.Where(t => t.Type == Type))
        {
            if (((LxdTemplateOptions)template.BackendOptions).IgnoredCommand is { } command)
            {
                LxdLog.CommandIgnored(logger, template.Name, Type, command);
            }
        }
    }

    public string Type => _client.Flavor.Type;

    public async Task<IMachineInstance> PrepareAsync(MachineSpec spec, CancellationToken cancellationToken)
    {
        var options = (LxdTemplateOptions)spec.Template.BackendOptions;
        var listen = spec.Template.SshHost == DynamicHost ? null : IPAddress.Parse(spec.Template.SshHost);
        try
        {
            using (_store.BeginCreate())
            {
                var (reference, fingerprint) = await _store.CurrentAsync(spec.Template, cancellationToken).ConfigureAwait(false);
                await _client.CreateInstanceAsync(InstanceRequest(spec, options, fingerprint, listen), cancellationToken).ConfigureAwait(false);
                var ssh = listen is null ? "on the instance's own address" : $"through {listen}:{spec.SshPort}";
                LxdLog.Created(_logger, spec.MachineId, reference, fingerprint, ssh);
                try
                {
                    var keys = spec.Template.KnownHostKeys.Count > 0 ? [] : await DiscoverHostKeysAsync(spec, fingerprint, cancellationToken).ConfigureAwait(false);
                    var fromCommittedVersion = reference != options.BaseImage;
                    return new LxdMachine(spec, fingerprint, fromCommittedVersion, keys, null, _client, _store, _logger);
                }
                catch
                {
                    await DeleteQuietlyAsync(spec.MachineId).ConfigureAwait(false);
                    throw;
                }
            }
        }
        catch (LxdApiException e)
        {
            throw new BackendOperationException($"{_client.Flavor.Product} could not prepare machine {spec.MachineId}: {e.DaemonMessage}", e);
        }
    }

    /// <summary>
    /// Finds the machine's instance by name and marks. A machine whose prepare never finished, or whose instance is gone,
    /// has what is left of it deleted instead.
    /// </summary>
    public async Task<ReattachedMachine?> ReattachAsync(MachineSpec spec, string? handle, MachineState? recordedState, CancellationToken cancellationToken)
    {
        try
        {
            var recorded = ReadHandle(handle);
            var instance = await _client.InstanceAsync(spec.MachineId, cancellationToken).ConfigureAwait(false);
            if (instance is not null && instance.ConfigValue(LxdMarks.Instance) != _store.Instance)
            {
                instance = null; // Someone else's instance of the same name: never touched.
            }

            if (recordedState is null || recorded is null)
            {
                if (instance is not null)
                {
                    await ForceDeleteAsync(spec.MachineId, cancellationToken).ConfigureAwait(false);
                    LxdLog.OrphanDeleted(_logger, spec.MachineId, spec.MachineId, "the daemon died while preparing it");
                }

                return null;
            }

            if (instance is null)
            {
                LxdLog.GoneAfterRestart(_logger, spec.MachineId, recordedState.Value.ToWire());
                return null;
            }

            var keys = spec.Template.KnownHostKeys.Count > 0 ? []
                : recorded.HostKeys is { } lines ? lines.Select(l => HostKey.TryParse(l, out _)).OfType<HostKey>().ToList()
                : await DiscoverHostKeysAsync(spec, recorded.Fingerprint, cancellationToken).ConfigureAwait(false);
            var machine = new LxdMachine(spec, recorded.Fingerprint, recorded.FromCommittedVersion, keys, recorded.DynamicHost, _client, _store, _logger);
            machine.TakeBack(instance.Running);
            LxdLog.TakenBack(_logger, spec.MachineId, instance.Status);
            return new ReattachedMachine(machine, instance.Running);
        }
        catch (LxdApiException e)
        {
            throw new BackendOperationException($"{_client.Flavor.Product} could not take back machine {spec.MachineId}: {e.DaemonMessage}", e);
        }
    }

    /// <summary>
    /// Deletes the instances marked with this daemon's instance whose machine it has no record of. Template versions and
    /// base images are never touched. An unreachable daemon is logged, not fatal: the next start tries again.
    /// </summary>
    public async Task RemoveOrphansAsync(IReadOnlySet<string> knownMachineIds, CancellationToken cancellationToken)
    {
        try
        {
            foreach (var instance in await _client.InstancesAsync(cancellationToken).ConfigureAwait(false))
            {
                if (instance.ConfigValue(LxdMarks.Instance) != _store.Instance)
                {
                    continue;
                }

                var machineId = instance.ConfigValue(LxdMarks.Machine);
                if (machineId is null || !knownMachineIds.Contains(machineId))
                {
                    await ForceDeleteAsync(instance.Name, cancellationToken).ConfigureAwait(false);
                    LxdLog.OrphanDeleted(_logger, machineId ?? "(none)", instance.Name, "not recorded");
                }
            }
        }
        catch (Exception e) when (e is LxdApiException or BackendUnavailableException)
        {
            LxdLog.OrphanRemovalFailed(_logger, Type, e.Message);
        }
    }

    /// <summary>The instance of a machine: its marks, profiles, limits and the proxy device that carries SSH.</summary>
    private JsonObject InstanceRequest(MachineSpec spec, LxdTemplateOptions options, string fingerprint, IPAddress? listen)
    {
        var config = new JsonObject();
        foreach (var (key, value) in options.Config)
        {
            config[key] = value;
        }

        foreach (var (key, value) in LxdMarks.Of(_store.Instance, spec, fingerprint))
        {
            config[key] = value;
        }

        var devices = new JsonObject();
        if (listen is not null)
        {
            var host = listen.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{listen}]" : listen.ToString();
            devices[SshDevice] = new JsonObject
            {
                ["type"] = "proxy",
                ["listen"] = $"tcp:{host}:{spec.SshPort.ToString(CultureInfo.InvariantCulture)}",
                ["connect"] = "tcp:127.0.0.1:22",
                ["bind"] = "host",
            };
        }

        if (options.StoragePool is { } pool)
        {
            devices["root"] = new JsonObject { ["type"] = "disk", ["path"] = "/", ["pool"] = pool };
        }

        return new JsonObject
        {
            ["name"] = spec.MachineId,
            ["type"] = options.VirtualMachine ? "virtual-machine" : "container",
            ["source"] = new JsonObject { ["type"] = "image", ["fingerprint"] = fingerprint },
            ["profiles"] = new JsonArray(options.Profiles.Select(p => (JsonNode)JsonValue.Create(p)).ToArray()),
            ["config"] = config,
            ["devices"] = devices,
        };
    }

    private async Task ForceDeleteAsync(string name, CancellationToken cancellationToken)
    {
        try
        {
            await _client.ChangeStateAsync(name, "stop", force: true, timeout: null, cancellationToken).ConfigureAwait(false);
        }
        catch (LxdApiException e) when (e.IsAlreadyStopped || e.IsNotFound)
        {
            // Off already.
        }

        try
        {
            await _client.DeleteInstanceAsync(name, cancellationToken).ConfigureAwait(false);
        }
        catch (LxdApiException e) when (e.IsNotFound)
        {
            // Gone already.
        }
    }

    private async Task DeleteQuietlyAsync(string name)
    {
        try
        {
            await ForceDeleteAsync(name, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception e) when (e is LxdApiException or BackendUnavailableException)
        {
            LxdLog.OperationFailed(_logger, name, "deleting a half-prepared instance", e.Message);
        }
    }

    /// <summary>A handle this version cannot read counts as none: the machine is cleaned up rather than half taken back.</summary>
    private static LxdHandle? ReadHandle(string? handle)
    {
        if (handle is null)
        {
            return null;
        }

        try
        {
            return JsonSerializer.Deserialize<LxdHandle>(handle) is { Fingerprint.Length: > 0 } read ? read : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    private async Task<IReadOnlyList<HostKey>> DiscoverHostKeysAsync(MachineSpec spec, string fingerprint, CancellationToken cancellationToken)
    {
        var keys = await _store.HostKeysAsync(spec.MachineId, fingerprint, cancellationToken).ConfigureAwait(false);
        if (keys.Count == 0)
        {
            LxdLog.NoHostKeyInImage(_logger, spec.MachineId, fingerprint);
        }
        else
        {
            LxdLog.HostKeyFromImage(_logger, spec.MachineId, keys[0].FingerprintSha256, keys[0].Type, fingerprint);
        }

        return keys;
    }
}
