using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using Falk.Core.Processes;
using Falk.Core.Waiting;

namespace Falk.Tests.Fixtures;

/// <summary>
/// A client of the original control protocol written from its description, behaving as unchanged Kevin does:
/// one request in flight, one line read per request (at most 64 KiB), and — as Kevin over SSH — every answer
/// within 5 s or it gives up. Over a Unix socket or over any pair of streams (an ssh process's pipes).
/// </summary>
public sealed class LegacyProtocolClient : IAsyncDisposable
{
    /// <summary>Kevin over ssh kills the session when an answer takes longer.</summary>
    public static readonly TimeSpan AnswerDeadline = TimeSpan.FromSeconds(5);

    private const int MaxAnswerBytes = 64 * 1024;

    private readonly Stream _read;
    private readonly Stream _write;
    private readonly Socket? _socket;
    private readonly Process? _process;

    private LegacyProtocolClient(Stream read, Stream write, Socket? socket, Process? process)
    {
        _read = read;
        _write = write;
        _socket = socket;
        _process = process;
    }

    public static async Task<LegacyProtocolClient> ConnectAsync(string socketPath, CancellationToken ct)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), ct);
        var stream = new NetworkStream(socket, ownsSocket: false);
        return new LegacyProtocolClient(stream, stream, socket, null);
    }

    /// <summary>Runs <paramref name="command"/> (ssh, falk shell) and speaks the protocol on its stdin and stdout.</summary>
    public static LegacyProtocolClient Spawn(IReadOnlyList<string> command, IReadOnlyDictionary<string, string>? environment = null)
    {
        var start = new ProcessStartInfo(command[0]) { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in command.Skip(1))
        {
            start.ArgumentList.Add(argument);
        }

        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[key] = value;
        }

        var process = Process.Start(start)!;
        process.ErrorDataReceived += (_, _) => { };
        process.BeginErrorReadLine();
        return new LegacyProtocolClient(process.StandardOutput.BaseStream, process.StandardInput.BaseStream, null, process);
    }

    public Process? Process => _process;

    public async Task SendAsync(string line, CancellationToken ct)
    {
        await _write.WriteAsync(Encoding.UTF8.GetBytes(line + "\n"), ct);
        await _write.FlushAsync(ct);
    }

    public async Task SendBytesAsync(byte[] bytes, CancellationToken ct)
    {
        await _write.WriteAsync(bytes, ct);
        await _write.FlushAsync(ct);
    }

    /// <summary>One answer line (without its newline), or null at EOF; fails after <see cref="AnswerDeadline"/>.</summary>
    public async Task<string?> ReadLineAsync(CancellationToken ct)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(ct);
        deadline.CancelAfter(AnswerDeadline);
        var line = new List<byte>();
        var one = new byte[1];
        try
        {
            while (true)
            {
                if (await _read.ReadAsync(one, deadline.Token) == 0)
                {
                    return line.Count == 0 ? null : throw new InvalidOperationException("the connection ended inside an answer");
                }

                if (one[0] == (byte)'\n')
                {
                    return Encoding.UTF8.GetString(line.ToArray());
                }

                line.Add(one[0]);
                line.Count.Should().BeLessThan(MaxAnswerBytes, "Kevin reads at most 64 KiB per answer");
            }
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new TimeoutException($"no answer within {AnswerDeadline.TotalSeconds} s (Kevin over ssh would kill the session)");
        }
    }

    /// <summary>A text-mode request and its answer line.</summary>
    public async Task<string> TextAsync(string line, CancellationToken ct)
    {
        await SendAsync(line, ct);
        return await ReadLineAsync(ct) ?? throw new InvalidOperationException($"EOF instead of an answer to '{line}'");
    }

    /// <summary>A JSON-mode request; the answer parsed.</summary>
    public async Task<JsonObject> QueryAsync(string json, CancellationToken ct)
    {
        await SendAsync(json, ct);
        var answer = await ReadLineAsync(ct) ?? throw new InvalidOperationException($"EOF instead of an answer to {json}");
        return JsonNode.Parse(answer)!.AsObject();
    }

    /// <summary>A JSON request whose answer must be of <paramref name="expectedClass"/> with exactly these fields (Kevin feeds them to a constructor).</summary>
    public async Task<JsonObject> ExpectAsync(string json, string expectedClass, CancellationToken ct, params string[] fields)
    {
        var answer = await QueryAsync(json, ct);
        answer["class"]!.GetValue<string>().Should().Be(expectedClass, answer.ToJsonString());
        answer.Select(p => p.Key).Should().BeEquivalentTo([.. fields, "class"], answer.ToJsonString());
        return answer;
    }

    /// <summary>
    /// Kevin's handshake line by line: Login (unless falk shell sent it), a text Welcome with non-empty fields,
    /// the mode switch answered in text, Version 0, then List. Returns the machine list.
    /// </summary>
    public async Task<JsonObject> KevinHandshakeAsync(bool sendLogin, CancellationToken ct)
    {
        if (sendLogin)
        {
            await SendAsync("login name=kevin source=/run/kevin/falk", ct);
        }

        var welcome = TextAnswer.Parse(await ReadLineAsync(ct) ?? throw new InvalidOperationException("EOF instead of Welcome"));
        welcome.Command.Should().Be("welcome");
        welcome.Fields.Keys.Should().BeEquivalentTo(["msg", "name"]);
        welcome.Fields["msg"].Should().NotBeEmpty();
        welcome.Fields["name"].Should().NotBeEmpty();

        (await TextAsync("mode mode=json", ct)).Should().Be("ok msg=''", "the Mode answer comes in the old mode");
        (await ExpectAsync("""{"version": 0, "class": "Version"}""", "OK", ct, "msg"))["msg"]!.GetValue<string>().Should().BeEmpty();
        return (await ExpectAsync("""{"class": "List"}""", "MachineList", ct, "machines"))["machines"]!.AsObject();
    }

    /// <summary>
    /// One job as Kevin runs it: Select (a section id), Prepare, Launch, GetConnectionInfo, then waits for ssh with
    /// the given key pinned in a fresh known_hosts file and StrictHostKeyChecking=yes, runs a command, Terminate, Cleanup.
    /// Returns the run id and what the command printed.
    /// </summary>
    public async Task<(long RunId, JsonObject Info, string Output)> KevinJobAsync(string sectionId, string clientKey, string command, CancellationToken ct)
    {
        var runId = (await ExpectAsync($$"""{"name": "{{sectionId}}", "class": "Select"}""", "RunID", ct, "run_id"))["run_id"]!.GetValue<long>();
        await ExpectAsync($$"""{"run_id": {{runId}}, "manage": false, "class": "Prepare"}""", "OK", ct, "msg");
        await ExpectAsync($$"""{"run_id": {{runId}}, "class": "Launch"}""", "OK", ct, "msg");
        var info = await ExpectAsync($$"""{"run_id": {{runId}}, "class": "GetConnectionInfo"}""", "ConnectionInfo", ct,
            "ssh_user", "ssh_host", "ssh_port", "ssh_known_host_key");
        var output = await KevinSshAsync(info, clientKey, command, ct);
        await ExpectAsync($$"""{"run_id": {{runId}}, "class": "Terminate"}""", "OK", ct, "msg");
        await ExpectAsync($$"""{"run_id": {{runId}}, "class": "Cleanup"}""", "OK", ct, "msg");
        return (runId, info, output);
    }

    /// <summary>Kevin's <c>wait_for_ssh_port</c> and job command: ssh with the answered key as the only known host.</summary>
    public static async Task<string> KevinSshAsync(JsonObject info, string clientKey, string command, CancellationToken ct)
    {
        var host = info["ssh_host"]!.GetValue<string>();
        var port = info["ssh_port"]!.GetValue<int>();
        var key = info["ssh_known_host_key"]!.GetValue<string>();
        using var knownHosts = new TempDirectory();
        var knownHostsFile = knownHosts.File("known_hosts");
        await File.WriteAllTextAsync(knownHostsFile, $"[{host}]:{port} {key}\n", ct);
        string[] Ssh(string remote) =>
        [
            "ssh", "-q", "-o", "BatchMode=yes", "-o", $"UserKnownHostsFile={knownHostsFile}", "-o", "StrictHostKeyChecking=yes",
            "-o", "ConnectTimeout=20", "-i", clientKey, "-p", port.ToString(System.Globalization.CultureInfo.InvariantCulture),
            $"{info["ssh_user"]!.GetValue<string>()}@{host}", "--", remote,
        ];

        var runner = new ProcessRunner();
        await Wait.UntilAsync(async token =>
        {
            try
            {
                await runner.RunAsync(new ProcessSpec(Ssh("true")), TimeSpan.FromSeconds(20), token);
                return ProbeOutcome.Done(true);
            }
            catch (ProcessFailedException e)
            {
                return ProbeOutcome.NotYet<bool>(e.Message);
            }
        }, TimeSpan.FromMilliseconds(500), TimeSpan.FromSeconds(60), "ssh into the job's machine", ct);
        return (await runner.RunAsync(new ProcessSpec(Ssh(command)), TimeSpan.FromSeconds(20), ct)).StdoutTail.Trim();
    }

    /// <summary>Closes the sending side (EOF for the daemon) without closing the receiving one.</summary>
    public void EndInput()
    {
        if (_socket is not null)
        {
            _socket.Shutdown(SocketShutdown.Send);
        }
        else
        {
            _write.Close();
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_socket is not null)
        {
            await _read.DisposeAsync();
            _socket.Dispose();
        }

        if (_process is not null)
        {
            try
            {
                _process.StandardInput.Close();
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException)
            {
                // Already gone, or already closed by EndInput.
            }

            if (!_process.WaitForExit(TimeSpan.FromSeconds(10)))
            {
                _process.Kill(entireProcessTree: true);
            }

            _process.Dispose();
        }
    }
}

/// <summary>A text-mode answer: <c>cmd key=value…</c> with POSIX shell quoting, parsed as the protocol's text mode is.</summary>
public sealed record TextAnswer(string Command, IReadOnlyDictionary<string, string> Fields)
{
    public static TextAnswer Parse(string line)
    {
        var words = new List<string>();
        var word = new StringBuilder();
        var inWord = false;
        for (var i = 0; i < line.Length; i++)
        {
            switch (line[i])
            {
                case ' ':
                    if (inWord)
                    {
                        words.Add(word.ToString());
                        word.Clear();
                        inWord = false;
                    }

                    break;
                case '\'':
                    var close = line.IndexOf('\'', i + 1);
                    word.Append(line, i + 1, close - i - 1);
                    inWord = true;
                    i = close;
                    break;
                case '"':
                    var end = line.IndexOf('"', i + 1);
                    word.Append(line, i + 1, end - i - 1);
                    inWord = true;
                    i = end;
                    break;
                default:
                    word.Append(line[i]);
                    inWord = true;
                    break;
            }
        }

        if (inWord)
        {
            words.Add(word.ToString());
        }

        return new TextAnswer(words[0], words.Skip(1).Select(w => w.Split('=', 2)).ToDictionary(p => p[0], p => p[1]));
    }
}
