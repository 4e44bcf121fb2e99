using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;

namespace Falk.Tests.Backends.Qemu;

/// <summary>
/// A QMP peer on a temporary Unix socket that plays a script: the test decides what is sent and when, so the client's
/// handling of ids, errors, events and a dropped connection can be checked without QEMU. Lines end in CRLF, as QEMU's do.
/// </summary>
public sealed class FakeQmpServer : IAsyncDisposable
{
    public const string Greeting = """{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": ["oob"]}}""";

    private readonly Socket _listener;
    private readonly Task _session;

    private FakeQmpServer(string path, Func<Peer, Task> script)
    {
        SocketPath = path;
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _listener.Bind(new UnixDomainSocketEndPoint(path));
        _listener.Listen(1);
        _session = RunAsync(script);
    }

    public string SocketPath { get; }

    /// <summary>Completes when the script has run (and faults if it failed).</summary>
    public Task Session => _session;

    public static FakeQmpServer Start(string path, Func<Peer, Task> script) => new(path, script);

    /// <summary>A script that greets, accepts qmp_capabilities and then runs <paramref name="then"/>.</summary>
    public static FakeQmpServer StartNegotiated(string path, Func<Peer, Task> then) =>
        Start(path, async peer =>
        {
            await peer.SendAsync(Greeting);
            var negotiate = await peer.ReceiveAsync();
            negotiate!["execute"]!.GetValue<string>().Should().Be("qmp_capabilities");
            await peer.SendAsync($$"""{"return": {}, "id": {{negotiate["id"]!.ToJsonString()}}}""");
            await then(peer);
        });

    public async ValueTask DisposeAsync()
    {
        _listener.Dispose();
        try
        {
            await _session.WaitAsync(TimeSpan.FromSeconds(5));
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or IOException)
        {
            // The test ended the conversation early. (A script still running after 5 s is not caught: it fails the test.)
        }

        File.Delete(SocketPath);
    }

    private async Task RunAsync(Func<Peer, Task> script)
    {
        using var connection = await _listener.AcceptAsync();
        await using var peer = new Peer(connection);
        await script(peer);
    }

    public sealed class Peer(Socket socket) : IAsyncDisposable
    {
        private readonly NetworkStream _stream = new(socket, ownsSocket: false);
        private StreamReader? _reader;

        private StreamReader Reader => _reader ??= new StreamReader(_stream, Encoding.UTF8);

        public async Task SendAsync(string json) =>
            await _stream.WriteAsync(Encoding.UTF8.GetBytes(json + "\r\n"));

        /// <summary>The next request, or null at end of stream.</summary>
        public async Task<JsonObject?> ReceiveAsync()
        {
            var line = await Reader.ReadLineAsync();
            return line is null ? null : JsonNode.Parse(line)!.AsObject();
        }

        public void Close() => socket.Shutdown(SocketShutdown.Both);

        public async ValueTask DisposeAsync()
        {
            _reader?.Dispose();
            await _stream.DisposeAsync();
        }
    }
}
