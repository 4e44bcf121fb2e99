using System.Net;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using Falk.Core.Unix;

namespace Falk.Tests.Fixtures;

/// <summary>
/// What one backend's kill-at-random-points run looks like. <paramref name="KillsIn"/> says which cycles get a SIGKILL
/// (at a random moment up to <paramref name="LatestKill"/> after the lifecycle starts); every other cycle must complete.
/// <paramref name="AssertBackendOwnsOnlyAsync"/> checks the backend's own leftovers (containers, overlays) against the
/// ids of the listed machines.
/// </summary>
public sealed record ChaosPlan(
    string Template,
    int Cycles,
    Func<int, bool> KillsIn,
    TimeSpan LatestKill,
    int MinimumCompleted,
    Func<IReadOnlySet<string>, string, CancellationToken, Task>? AssertBackendOwnsOnlyAsync = null);

/// <summary>
/// Runs create → boot → delete again and again against a real falkd, SIGKILLs the daemon at random points and starts it
/// again on the same state. A lifecycle no kill hit must succeed with the documented status codes; one that was hit may
/// only fail for want of a daemon (a dropped or refused connection), never with an error answer, and its machine, if
/// any, must come back in a settled state and delete cleanly. After each cycle and at the end nothing of the daemon's
/// is left that it does not list, and every port of its range not held by a listed machine can be bound on the host.
/// </summary>
public static class KillChaos
{
    private static readonly string[] SettledStates = ["prepared", "running", "stopped"];

    /// <summary>Runs the plan; returns how many lifecycles completed and how many kills there were.</summary>
    public static async Task<(int Completed, int Kills)> RunAsync(FalkDaemon daemon, ChaosPlan plan, CancellationToken ct)
    {
        var seed = Random.Shared.Next();
        var random = new Random(seed);
        var completed = 0;
        var kills = 0;
        for (var cycle = 0; cycle < plan.Cycles; cycle++)
        {
            var because = $"cycle {cycle}, seed {seed}";
            var lifecycle = new Lifecycle(daemon.Client, plan.Template);
            var running = lifecycle.RunAsync(ct);
            if (plan.KillsIn(cycle))
            {
                await Task.Delay(random.Next(0, (int)plan.LatestKill.TotalMilliseconds), ct);
                await daemon.SignalDaemonOnlyAsync(kill: true, ct);
                kills++;
                var outcome = await running;
                outcome.Should().BeOneOf([LifecycleOutcome.Completed, LifecycleOutcome.DaemonGone], because);
                await daemon.StartProcessAsync(ct);
                if (outcome == LifecycleOutcome.Completed)
                {
                    completed++;
                }
                else if (lifecycle.Id is { } id)
                {
                    await AssertSettledOrGoneAsync(daemon.Client, id, because, ct);
                }
            }
            else
            {
                (await running).Should().Be(LifecycleOutcome.Completed, $"no kill hit {because}");
                completed++;
            }

            var ids = await AssertOnlyListedMachinesLeftAsync(daemon, plan, because, ct);

            // Whatever a kill left is deleted, so the next cycle starts from nothing (and at most one guest runs).
            foreach (var id in ids)
            {
                await daemon.Client.DeleteMachineAsync(id, ct);
            }
        }

        (await AssertOnlyListedMachinesLeftAsync(daemon, plan, "at the end", ct)).Should().BeEmpty();
        completed.Should().BeGreaterThanOrEqualTo(plan.MinimumCompleted, $"seed {seed}");
        return (completed, kills);
    }

    /// <summary>Whether a TCP listener can take the port on every IPv4 and IPv6 address of this host.</summary>
    public static bool CanListenOn(int port) => CanListenOn(IPAddress.Any, port) && CanListenOn(IPAddress.IPv6Any, port);

    private static bool CanListenOn(IPAddress address, int port)
    {
        var listener = new TcpListener(address, port);
        if (address.AddressFamily == AddressFamily.InterNetworkV6)
        {
            listener.Server.DualMode = false;
        }

        try
        {
            listener.Start();
            return true;
        }
        catch (SocketException e)
        {
            return e.SocketErrorCode == SocketError.AddressFamilyNotSupported;
        }
        finally
        {
            listener.Stop();
        }
    }

    /// <summary>A machine whose lifecycle a kill cut short is gone or in a settled state after the restart.</summary>
    private static async Task AssertSettledOrGoneAsync(HttpClient client, string id, string because, CancellationToken ct)
    {
        using var response = await client.GetAsync($"v1/machines/{id}", ct);
        if (response.StatusCode == HttpStatusCode.NotFound)
        {
            return;
        }

        var body = await response.JsonAsync(ct);
        response.StatusCode.Should().Be(HttpStatusCode.OK, body.ToJsonString());
        body["state"]!.GetValue<string>().Should().BeOneOf(SettledStates, $"a restart settles machine {id} ({because}): {body.ToJsonString()}");
    }

    /// <summary>
    /// Every process, folder and backend object of the daemon belongs to a machine it lists, listed machines are in
    /// settled states on distinct ports, and every other port of the range is free on the host. Returns the listed ids.
    /// </summary>
    private static async Task<IReadOnlySet<string>> AssertOnlyListedMachinesLeftAsync(FalkDaemon daemon, ChaosPlan plan, string because, CancellationToken ct)
    {
        var machines = (await daemon.Client.ListAsync(ct)).Select(m => m!).ToList();
        var ids = machines.Select(m => m["id"]!.GetValue<string>()).ToHashSet();
        machines.Where(m => !SettledStates.Contains(m["state"]!.GetValue<string>())).Should().BeEmpty($"a restart settles every machine ({because})");
        var held = machines.Select(m => m["ssh"]!["port"]!.GetValue<int>()).ToList();
        held.Should().OnlyHaveUniqueItems(because);

        foreach (var pid in ProcessTree.WithEnvironment("FALK_INSTANCE", daemon.Instance))
        {
            ids.Should().Contain(ProcessTree.EnvironmentValue(pid, "FALK_MACHINE_ID"), $"process {pid} must belong to a listed machine ({because})");
        }

        var folders = Path.Combine(daemon.Directory.File("state"), "machines");
        if (Directory.Exists(folders))
        {
            Directory.EnumerateDirectories(folders).Select(Path.GetFileName).Should().BeSubsetOf(ids, because);
        }

        if (plan.AssertBackendOwnsOnlyAsync is { } assertBackend)
        {
            await assertBackend(ids, because, ct);
        }

        Enumerable.Range(daemon.Ports.First, daemon.Ports.Last - daemon.Ports.First + 1)
            .Except(held)
            .Where(port => !CanListenOn(port))
            .Should().BeEmpty($"no port of the range is held on the host but by a listed machine ({because})");
        return ids;
    }

    private enum LifecycleOutcome
    {
        Completed,
        DaemonGone,
    }

    /// <summary>One create → boot → delete, each step checked for its documented status.</summary>
    private sealed class Lifecycle(HttpClient client, string template)
    {
        /// <summary>The machine's id once the create was answered.</summary>
        public string? Id { get; private set; }

        public async Task<LifecycleOutcome> RunAsync(CancellationToken ct)
        {
            try
            {
                Id = (await client.CreateAsync(template, ct))["id"]!.GetValue<string>();
                await client.BootAsync(Id, ct, query: "");
                await client.DeleteMachineAsync(Id, ct);
                return LifecycleOutcome.Completed;
            }
            catch (Exception e) when (e is HttpRequestException or IOException)
            {
                // No daemon under the request: the connection was dropped or refused. An answer, right or wrong, is
                // never caught here (the status checks above throw assertion failures).
                return LifecycleOutcome.DaemonGone;
            }
        }
    }
}
