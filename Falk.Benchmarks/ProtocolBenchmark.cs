using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;

namespace Falk.Benchmarks;

/// <summary>
/// Kevin's job over the original control protocol on a custom template running Debian's sshd: how long each answer
/// takes (Kevin over ssh allows 5 s), and how long after a connection drops its machine is gone (the original: at once).
/// </summary>
public static class ProtocolBenchmark
{
    private static readonly string[] Requests = ["Select", "Prepare", "Launch", "GetConnectionInfo", "Terminate", "Cleanup"];

    public static async Task<int> RunAsync(string[] args, CancellationToken cancellationToken)
    {
        var runs = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 20;
        var bench = await SshdWorkbench.StartAsync("[27700,27799]", cancellationToken);
        await using (bench)
        {
            var socketPath = Path.Combine(bench.Work, "falk.sock");
            var answers = Requests.ToDictionary(r => r, _ => new List<double>());
            var handshakes = new List<double>();
            var drops = new List<double>();
            for (var i = 0; i < runs + 2; i++)
            {
                using (var connection = await Connection.OpenAsync(socketPath, cancellationToken))
                {
                    var handshake = await connection.HandshakeAsync(cancellationToken);
                    var runId = 0L;
                    foreach (var request in Requests)
                    {
                        var line = request == "Select" ? """{"name": "sshd", "class": "Select"}""" : $$"""{"run_id": {{runId}}, "class": "{{request}}"}""";
                        var (answer, elapsed) = await connection.QueryAsync(line, cancellationToken);
                        if (answer["class"]!.GetValue<string>() == "Error")
                        {
                            throw new InvalidOperationException($"{request}: {answer.ToJsonString()}");
                        }

                        runId = request == "Select" ? answer["run_id"]!.GetValue<long>() : runId;
                        if (i >= 2)
                        {
                            answers[request].Add(elapsed);
                        }
                    }

                    if (i >= 2)
                    {
                        handshakes.Add(handshake);
                    }
                }

                var dropped = await DropAsync(socketPath, bench.Client, cancellationToken);
                if (i >= 2)
                {
                    drops.Add(dropped);
                }
            }

            Console.WriteLine($"control protocol (JSON mode, custom backend with Debian sshd), {runs} runs after 2 warm-up runs");
            Console.WriteLine(Stats.Describe("Kevin's handshake (4 answers)", handshakes));
            foreach (var request in Requests)
            {
                Console.WriteLine(Stats.Describe($"{request} answer", answers[request]));
            }

            Console.WriteLine(Stats.Describe("dropped connection → machine gone", drops));
            return 0;
        }
    }

    /// <summary>Select + Launch, then the connection is closed; the time until the machine is no longer listed.</summary>
    private static async Task<double> DropAsync(string socketPath, HttpClient client, CancellationToken cancellationToken)
    {
        var connection = await Connection.OpenAsync(socketPath, cancellationToken);
        await connection.HandshakeAsync(cancellationToken);
        await connection.QueryAsync("""{"name": "sshd", "class": "Select"}""", cancellationToken);
        await connection.QueryAsync("""{"class": "Launch"}""", cancellationToken);
        var watch = Stopwatch.StartNew();
        connection.Dispose();
        await Falk.Core.Waiting.Wait.UntilAsync(async token =>
            JsonNode.Parse(await client.GetStringAsync("v1/machines", token))!.AsArray().Count == 0
                ? Falk.Core.Waiting.ProbeOutcome.Done(true)
                : Falk.Core.Waiting.ProbeOutcome.NotYet<bool>("still listed"),
            TimeSpan.FromMilliseconds(10), TimeSpan.FromSeconds(30), "the dropped connection's machine to go", cancellationToken);
        return watch.Elapsed.TotalMilliseconds;
    }

    private sealed class Connection : IDisposable
    {
        private readonly Socket _socket;
        private readonly StreamReader _reader;
        private readonly NetworkStream _stream;

        private Connection(Socket socket)
        {
            _socket = socket;
            _stream = new NetworkStream(socket, ownsSocket: false);
            _reader = new StreamReader(_stream, Encoding.UTF8);
        }

        public static async Task<Connection> OpenAsync(string path, CancellationToken cancellationToken)
        {
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), cancellationToken);
            return new Connection(socket);
        }

        public async Task<double> HandshakeAsync(CancellationToken cancellationToken)
        {
            var watch = Stopwatch.StartNew();
            await LineAsync("login name=bench source=local", cancellationToken);
            await LineAsync("mode mode=json", cancellationToken);
            await LineAsync("""{"version": 0, "class": "Version"}""", cancellationToken);
            await LineAsync("""{"class": "List"}""", cancellationToken);
            return watch.Elapsed.TotalMilliseconds;
        }

        public async Task<(JsonObject Answer, double Milliseconds)> QueryAsync(string line, CancellationToken cancellationToken)
        {
            var watch = Stopwatch.StartNew();
            var answer = await LineAsync(line, cancellationToken);
            return (JsonNode.Parse(answer)!.AsObject(), watch.Elapsed.TotalMilliseconds);
        }

        private async Task<string> LineAsync(string line, CancellationToken cancellationToken)
        {
            await _stream.WriteAsync(Encoding.UTF8.GetBytes(line + "\n"), cancellationToken);
            return await _reader.ReadLineAsync(cancellationToken) ?? throw new IOException("falkd closed the connection");
        }

        public void Dispose()
        {
            _reader.Dispose();
            _stream.Dispose();
            _socket.Dispose();
        }
    }
}
