using System.Net;
using Falk.Core.Processes;
using Falk.Core.Waiting;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Hardening;

/// <summary>
/// Issue 13 item 2 on the real daemon: a peer's uid and groups are the ones it had when it connected, whatever
/// happens to its process (or its pid) afterwards.
/// </summary>
public sealed class PeerIdentityTests
{
    private const string Template = """
        [local]
        type = custom
        launch = /bin/sleep 1000
        ssh_user = nobody
        """;

    // Connects to the socket, then lets the connection outlive what connected (see the tests); writes the answer
    // (status line, headers, body) to a file. argv: socket, mode, path, answer file.
    private const string Peer = """
        import os, socket, sys, time
        path, mode, url, out = sys.argv[1:5]
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(20)
        if mode == "regain-root":
            # Connect as uid 65533 without groups, then become root in admin group 'adm' (gid 4): what /proc/<pid>
            # says now is what a process reusing the pid would say.
            os.setgroups([]); os.setresgid(65533, 65533, 0); os.setresuid(65533, 65533, 0)
            s.connect(path)
            os.setresuid(0, 0, 0); os.setresgid(0, 0, 0); os.setgroups([4])
        else:
            s.connect(path)
            ready_r, ready_w = os.pipe()
            parent = os.getpid()
            if os.fork() != 0:
                os.read(ready_r, 1)
                os._exit(0)  # the connecting process is gone; its child still holds the connection
            os.setsid()  # out of the process group the test's runner cleans up
            sys.stderr = open(out + ".err", "w")
            os.write(ready_w, b"x")
            deadline = time.monotonic() + 20  # never outlive the test
            while os.getppid() == parent and time.monotonic() < deadline:
                time.sleep(0.01)
        try:
            s.sendall(f"GET {url} HTTP/1.0\r\nHost: falk\r\n\r\n".encode())
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        except OSError as e:
            answer = f"peer failed: {e!r}".encode()
        with open(out + ".tmp", "wb") as f:
            f.write(answer)
        os.rename(out + ".tmp", out)
        """;

    [Fact(Timeout = 60_000)]
    public async Task A_peer_that_hands_its_connection_to_a_child_and_exits_keeps_its_own_groups_rights()
    {
        var ct = TestContext.Current.CancellationToken;
        Assert.SkipUnless(Environment.UserName == "root", "needs root to connect as another uid");
        var daemon = await StartOpenToOthersAsync("allowed_groups = users", ct);
        await using (daemon)
        {
            // nobody, allowed only through its supplementary group 'users' (gid 100).
            var answer = await RunPeerAsync(daemon, ["setpriv", "--reuid=65534", "--regid=65534", "--groups=100"], "fork-and-exit", ct);

            answer.Should().StartWith("HTTP/1.1 200", "the connection keeps the groups its peer had at connect()");
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task A_peer_whose_pid_later_shows_an_admin_group_gets_no_more_than_it_connected_with()
    {
        var ct = TestContext.Current.CancellationToken;
        Assert.SkipUnless(Environment.UserName == "root", "needs root to connect as another uid");
        var daemon = await StartOpenToOthersAsync("allowed_users = 65533\nadmin_groups = adm", ct);
        await using (daemon)
        {
            var id = (await daemon.Client.CreateAsync("local", ct))["id"]!.GetValue<string>();

            var mine = await RunPeerAsync(daemon, [], "regain-root", ct, "/v1/machines");
            mine.Should().StartWith("HTTP/1.1 200").And.EndWith("[]", "uid 65533 is no admin and owns nothing");
            var other = await RunPeerAsync(daemon, [], "regain-root", ct, $"/v1/machines/{id}");
            other.Should().StartWith("HTTP/1.1 404", "root's machine is not visible to uid 65533");
            (await daemon.Client.ListAsync(ct)).Should().ContainSingle();
        }
    }

    private static async Task<FalkDaemon> StartOpenToOthersAsync(string access, CancellationToken ct)
    {
        var daemon = await FalkDaemon.StartAsync(Template, ct, access);
        File.SetUnixFileMode(daemon.SocketPath, (UnixFileMode)Convert.ToInt32("777", 8));
        File.SetUnixFileMode(daemon.Directory.Path, (UnixFileMode)Convert.ToInt32("755", 8));
        await File.WriteAllTextAsync(daemon.Directory.File("peer.py"), Peer, ct);
        File.SetUnixFileMode(daemon.Directory.File("peer.py"), (UnixFileMode)Convert.ToInt32("644", 8));
        return daemon;
    }

    private static async Task<string> RunPeerAsync(FalkDaemon daemon, IReadOnlyList<string> asUser, string mode, CancellationToken ct, string url = "/v1/machines")
    {
        // The answer comes from the connecting process's child, after the process the runner waits for is gone.
        var answers = daemon.Directory.File("answers");
        Directory.CreateDirectory(answers);
        File.SetUnixFileMode(answers, (UnixFileMode)Convert.ToInt32("777", 8));
        var answer = Path.Combine(answers, Guid.NewGuid().ToString("N"));
        await new ProcessRunner().RunAsync(
            new([.. asUser, "/usr/bin/python3", daemon.Directory.File("peer.py"), daemon.SocketPath, mode, url, answer]),
            TimeSpan.FromSeconds(30), ct);
        return await Wait.UntilAsync(
            _ => Task.FromResult(File.Exists(answer) ? ProbeOutcome.Done(File.ReadAllText(answer).Trim()) : ProbeOutcome.NotYet<string>("no answer yet; " + (File.Exists(answer + ".err") ? File.ReadAllText(answer + ".err") : "no child"))),
            TimeSpan.FromMilliseconds(20), TimeSpan.FromSeconds(20), "the peer's answer", ct);
    }
}
