namespace Falk.Core.Backends.Lxd;

/// <summary>
/// What one launch of an instance has printed so far, as much as it takes to tell LXD handing all of it out again:
/// once the instance has stopped, LXD answers a console read with its whole log from the launch on, and a read that
/// found it running may get that answer when it stopped just after. Kept in memory (length, first and last KiB), not
/// read back from the console log file, which rotates and is cut to <c>console_max_bytes</c>.
/// </summary>
internal sealed class LxdLaunchOutput
{
    private const int Edge = 1024;

    // A short launch output could start new output by chance.
    private const int ShortestReplay = 32;

    private byte[] _head = [];
    private byte[] _tail = [];

    public long Length { get; private set; }

    public void Add(ReadOnlySpan<byte> output)
    {
        if (output.IsEmpty)
        {
            return;
        }

        if (_head.Length < Edge)
        {
            _head = [.. _head, .. output[..Math.Min(Edge - _head.Length, output.Length)].ToArray()];
        }

        byte[] tail = output.Length >= Edge ? output[^Edge..].ToArray() : [.. _tail, .. output.ToArray()];
        _tail = tail.Length > Edge ? tail[^Edge..] : tail;
        Length += output.Length;
    }

    /// <summary>How much of <paramref name="part"/> is this output handed out again: all of it, or 0 when <paramref name="part"/> is new output only.</summary>
    public int ReplayedIn(ReadOnlySpan<byte> part)
    {
        if (Length < ShortestReplay || part.Length < Length)
        {
            return 0;
        }

        var replay = part[..(int)Length];
        return replay.StartsWith(_head) && replay.EndsWith(_tail) ? replay.Length : 0;
    }
}
