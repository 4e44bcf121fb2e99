using System.Net.Sockets;
using System.Text;

namespace Falk.Core.Backends.Qemu;

/// <summary>
/// A machine's serial console. QEMU serves it on a Unix socket in its own folder and waits for Falk to connect before
/// the guest runs (<c>server=on,wait=on</c>); Falk reads it into the machine's console log, which stays within
/// <c>console_max_bytes</c> (<see cref="ConsoleLogWriter"/>: the newest output kept) and is the daemon's own file, and
/// watches it for a kernel panic. While no one is connected (a daemon restart) QEMU drops what the guest writes.
/// </summary>
internal sealed class QemuConsole : IAsyncDisposable
{
    public const string PanicMarker = "Kernel panic";

    /// <summary>How much of one console line is looked at for the panic marker (which the kernel prints at its start).</summary>
    private const int MaxWatchedLine = 1024;

    private static readonly byte[] PanicBytes = Encoding.ASCII.GetBytes(PanicMarker);

    private readonly Socket _socket;
    private readonly ConsoleLogWriter _log;
    private readonly byte[] _line = new byte[MaxWatchedLine];
    private int _lineLength;
    private string? _panic;

    private QemuConsole(Socket socket, ConsoleLogWriter log)
    {
        _socket = socket;
        _log = log;
        Completed = PumpAsync();
    }

    /// <summary>Completes when QEMU closed the console (it ended) or the console was disposed; the log is then closed.</summary>
    public Task Completed { get; }

    /// <summary>The first line with "Kernel panic" the guest wrote since the console was connected, if any.</summary>
    public string? Panic => Volatile.Read(ref _panic);

    /// <summary>Connects to QEMU's console socket; throws <see cref="SocketException"/> while QEMU does not listen yet.</summary>
    public static async Task<QemuConsole> ConnectAsync(string socketPath, string logPath, long maxBytes, CancellationToken cancellationToken)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        return new QemuConsole(socket, new ConsoleLogWriter(logPath, maxBytes));
    }

    public async ValueTask DisposeAsync()
    {
        _socket.Dispose();
        await Completed.ConfigureAwait(false);
    }

    private async Task PumpAsync()
    {
        var buffer = new byte[16 * 1024];
        try
        {
            int read;
            while ((read = await _socket.ReceiveAsync(buffer, SocketFlags.None).ConfigureAwait(false)) > 0)
            {
                _log.Write(buffer.AsSpan(0, read));
                _log.Flush();
                if (_panic is null)
                {
                    Watch(buffer.AsSpan(0, read));
                }
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // Disposed, or QEMU went away: what was read is in the log.
        }
        finally
        {
            _log.Dispose();
        }
    }

    /// <summary>Collects lines (the first <see cref="MaxWatchedLine"/> bytes of each) and keeps the first with the panic marker.</summary>
    private void Watch(ReadOnlySpan<byte> bytes)
    {
        foreach (var b in bytes)
        {
            if (b != (byte)'\n')
            {
                if (_lineLength < _line.Length)
                {
                    _line[_lineLength++] = b;
                }

                continue;
            }

            var line = _line.AsSpan(0, _lineLength);
            _lineLength = 0;
            if (line.IndexOf(PanicBytes) >= 0)
            {
                Volatile.Write(ref _panic, Encoding.UTF8.GetString(line).TrimEnd('\r'));
                return;
            }
        }
    }
}
