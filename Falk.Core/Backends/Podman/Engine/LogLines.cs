using System.Globalization;
using System.Text;

namespace Falk.Core.Backends.Podman.Engine;

/// <summary>
/// Copies a log read with timestamps (<c>2026-01-02T03:04:05.123456789Z text</c>) without them, skipping lines logged
/// at or before a time already copied.
/// </summary>
public static class LogLines
{
    /// <summary>Copies the lines newer than <paramref name="after"/>; returns the time of the last line seen (or <paramref name="after"/>).</summary>
    public static async Task<DateTimeOffset?> CopyAsync(ContainerLog logs, Stream destination, DateTimeOffset? after, CancellationToken cancellationToken)
    {
        var last = after;
        var pending = new MemoryStream();
        var buffer = new byte[16 * 1024];
        int read;
        while ((read = await logs.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0)
        {
            var start = 0;
            for (var i = 0; i < read; i++)
            {
                if (buffer[i] != (byte)'\n')
                {
                    continue;
                }

                pending.Write(buffer, start, i + 1 - start);
                start = i + 1;
                last = await WriteLineAsync(pending, destination, last, cancellationToken).ConfigureAwait(false);
            }

            pending.Write(buffer, start, read - start);
            await destination.FlushAsync(cancellationToken).ConfigureAwait(false);
        }

        if (pending.Length > 0)
        {
            last = await WriteLineAsync(pending, destination, last, cancellationToken).ConfigureAwait(false);
        }

        return last;
    }

    private static async Task<DateTimeOffset?> WriteLineAsync(MemoryStream pending, Stream destination, DateTimeOffset? last, CancellationToken cancellationToken)
    {
        var line = pending.GetBuffer().AsMemory(0, (int)pending.Length);
        pending.SetLength(0);
        var space = line.Span.IndexOf((byte)' ');
        if (space > 0 && TryParseTime(line.Span[..space], out var time))
        {
            if (last is { } seen && time <= seen)
            {
                return last;
            }

            await destination.WriteAsync(line[(space + 1)..], cancellationToken).ConfigureAwait(false);
            return time;
        }

        await destination.WriteAsync(line, cancellationToken).ConfigureAwait(false);
        return last;
    }

    /// <summary>RFC 3339 with up to nine fraction digits (.NET reads seven).</summary>
    internal static bool TryParseTime(ReadOnlySpan<byte> bytes, out DateTimeOffset time)
    {
        time = default;
        if (bytes.Length is < 20 or > 40)
        {
            return false;
        }

        var text = Encoding.ASCII.GetString(bytes);
        var dot = text.IndexOf('.', StringComparison.Ordinal);
        if (dot > 0)
        {
            var end = dot + 1;
            while (end < text.Length && char.IsAsciiDigit(text[end]))
            {
                end++;
            }

            var fraction = text[(dot + 1)..end];
            text = string.Concat(text.AsSpan(0, dot + 1), fraction.Length > 7 ? fraction[..7] : fraction, text.AsSpan(end));
        }

        return DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out time);
    }
}
