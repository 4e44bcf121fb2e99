using Falk.Core.Processes;
using Falk.Core.Waiting;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Hardening;

/// <summary>
/// Issue 13 item 5 on the real daemon and socket: a uid that is not an admin holds at most
/// <c>max_connections_per_uid</c> connections and <c>max_event_streams_per_uid</c> event streams; one more is
/// answered 429 problem+json and closed, while another uid (65533) and root are served as before, and a place given
/// back can be taken again. The peers are Python clients run as uids 65534 and 65533, so these tests need root.
/// </summary>
public sealed class PerUidLimitTests
{
    private const string Template = """
        [sleeper]
        type = custom
        launch = /bin/sleep 1000
        ssh_user = nobody
        """;

    // Holds LIMIT connections (idle, or each following /v1/events), asks once more, prints what that got, waits for
    // the release file, gives one back and asks again.
    private const string Client = """
        import os, socket, sys, time
        mode, path, limit, release = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
        target = "/v1/events" if mode == "streams" else "/v1/machines"
        def ask(s):
            s.sendall(f"GET {target} HTTP/1.1\r\nHost: falk\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(65536)
                if not chunk: break
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
            while length and len(body) < length[0]:
                body += s.recv(65536)
            return head.split(b" ")[1].decode(), body.decode(errors="replace").replace("\n", " ")
        def connect():
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            return s
        held = [connect() for _ in range(limit)]
        # Each held connection is answered once first: the daemon counts a connection when it accepts it, which may
        # come after a later connect, so only an answer proves it is counted before the extra one.
        answers = [ask(s)[0] for s in held]
        if mode == "streams":
            print("held", *answers, flush=True)
        extra = connect()
        status, body = ask(extra)
        print("refused", status, body, flush=True)
        if mode == "conns":
            line = connect()
            line.sendall(b"help\n")
            print("protocol", line.makefile("rb").readline().decode().strip(), flush=True)
            line.close()
        print("ready", flush=True)
        while not os.path.exists(release):
            time.sleep(0.05)
        held.pop().close()
        extra.close()
        # The daemon gives the places back once it sees the connections close.
        for _ in range(100):
            again = ask(connect())[0]
            if again != "429": break
            time.sleep(0.1)
        print("again", again, flush=True)
        """;

    // The status of one GET.
    private const string FirstLine = """
        import socket, sys
        s = socket.socket(socket.AF_UNIX)
        s.connect(sys.argv[1])
        s.sendall(f"GET {sys.argv[2]} HTTP/1.1\r\nHost: falk\r\n\r\n".encode())
        print(s.makefile("rb").readline().split(b" ")[1].decode())
        """;

    [Fact(Timeout = 90_000)]
    public async Task A_uid_over_max_connections_per_uid_gets_429_and_other_uids_are_served()
    {
        var (refused, again, other) = await RunAsync("conns", "max_connections_per_uid = 3", limit: 3, TestContext.Current.CancellationToken);

        refused.Should().Contain("refused 429").And.Contain("urn:falk:problem:too-many-connections").And.Contain("uid 65534");
        refused.Should().Contain("protocol error msg=").And.Contain("PermissionError", "the original protocol is told in its own words");
        other.Should().Be("200", "uid 65533 has connections of its own");
        again.Should().Be("again 200", "a connection given back can be taken again");
    }

    [Fact(Timeout = 90_000)]
    public async Task A_uid_over_max_event_streams_per_uid_gets_429_and_other_uids_still_subscribe()
    {
        var (refused, again, other) = await RunAsync("streams", "max_event_streams_per_uid = 2", limit: 2, TestContext.Current.CancellationToken);

        refused.Should().Contain("held 200 200").And.Contain("refused 429").And.Contain("urn:falk:problem:too-many-event-streams");
        other.Should().Be("200");
        again.Should().Be("again 200");
    }

    /// <summary>Runs the client as uid 65534 against a daemon with <paramref name="limits"/>; while it holds its places, one request of uid 65533 and one of root.</summary>
    private static async Task<(string Refused, string Again, string Other)> RunAsync(string mode, string limits, int limit, CancellationToken ct)
    {
        Assert.SkipUnless(Environment.UserName == "root", "needs root to connect as other uids");
        using var marks = new TempDirectory();
        File.SetUnixFileMode(marks.Path, (UnixFileMode)Convert.ToInt32("755", 8));
        var release = marks.File("release");
        var daemon = await FalkDaemon.StartAsync(Template, ct, limits);
        await using (daemon)
        {
            File.SetUnixFileMode(daemon.SocketPath, (UnixFileMode)Convert.ToInt32("777", 8));
            File.SetUnixFileMode(daemon.Directory.Path, (UnixFileMode)Convert.ToInt32("755", 8));
            var target = mode == "streams" ? "v1/events" : "v1/machines";
            await using var client = RunningProcess.Start(new ProcessSpec(As(65534, ["/usr/bin/python3", "-c", Client, mode, daemon.SocketPath, $"{limit}", release])));
            var refused = await Wait.UntilAsync(
                _ => Task.FromResult(client.Stdout.Tail(10).Contains("ready", StringComparison.Ordinal)
                    ? ProbeOutcome.Done(client.Stdout.Tail(10))
                    : ProbeOutcome.NotYet<string>(client.OutputTail())),
                TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(30), "the client to hold its places", ct);

            // Meanwhile another uid, and root, are served.
            // (python, not curl: an event stream never ends, and the first line of the answer is what counts.)
            var other = await new ProcessRunner().RunAsync(new ProcessSpec(As(65533, ["/usr/bin/python3", "-c", FirstLine, daemon.SocketPath, "/" + target])),
                TimeSpan.FromSeconds(30), ct);
            using (var root = await daemon.Client.GetAsync("v1/machines", ct))
            {
                root.StatusCode.Should().Be(System.Net.HttpStatusCode.OK);
            }

            await File.WriteAllTextAsync(release, "go", ct);
            await client.WaitForExitAsync(ct).WaitAsync(TimeSpan.FromSeconds(30), ct);
            await client.WaitForOutputAsync(ct);
            var again = client.Stdout.Tail(10).Split('\n').Single(l => l.StartsWith("again", StringComparison.Ordinal));
            return (refused, again, other.StdoutTail.Trim());
        }
    }

    private static List<string> As(int uid, IEnumerable<string> command) =>
        ["setpriv", $"--reuid={uid}", $"--regid={uid}", "--clear-groups", .. command];
}
