using System.Text;

namespace Falk.Core.Backends;

/// <summary>
/// A console log file that backends which write one (QEMU's serial port, a custom launch's output) serve: read whole,
/// or followed as it grows. A log Falk writes itself (<see cref="ConsoleLogWriter"/>) is kept within its cap by moving
/// the full file aside to <c>PATH.1</c>; reading starts there.
/// </summary>
public static class ConsoleLog
{
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(200);

    /// <summary>Where the older half of a capped console log is kept.</summary>
    public static string RotatedPath(string path) => path + ".1";

    /// <summary>
    /// Copies the file (after its rotated older part) to <paramref name="destination"/>; with <paramref name="follow"/>
    /// keeps copying what is appended, across rotations, until <paramref name="stopped"/> completes (then the rest is
    /// copied) or the token is cancelled. A file that does not exist yet reads as empty.
    /// </summary>
    public static async Task CopyAsync(string path, Stream destination, bool follow, Task? stopped, CancellationToken cancellationToken)
    {
        var buffer = new byte[16 * 1024];
        if (Open(RotatedPath(path)) is { } older)
        {
            await using (older.ConfigureAwait(false))
            {
                await CopyRestAsync(older, destination, buffer, cancellationToken).ConfigureAwait(false);
            }
        }

        FileStream? file = null;
        try
        {
            while (true)
            {
                var done = !follow || stopped is null || stopped.IsCompleted;
                file ??= Open(path);
                if (file is not null)
                {
                    await CopyRestAsync(file, destination, buffer, cancellationToken).ConfigureAwait(false);

                    // Moved aside while read: its end is copied, then the new file from its start.
                    if (!IsStill(file, path))
                    {
                        await CopyRestAsync(file, destination, buffer, cancellationToken).ConfigureAwait(false);
                        await file.DisposeAsync().ConfigureAwait(false);
                        file = null;
                        continue;
                    }
                }

                if (done)
                {
                    return;
                }

                await Task.WhenAny(Task.Delay(PollInterval, cancellationToken), stopped!).ConfigureAwait(false);
                cancellationToken.ThrowIfCancellationRequested();
            }
        }
        finally
        {
            if (file is not null)
            {
                await file.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    private static FileStream? Open(string path)
    {
        try
        {
            return new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            return null;
        }
    }

    private static async Task CopyRestAsync(FileStream file, Stream destination, byte[] buffer, CancellationToken cancellationToken)
    {
        int read;
        while ((read = await file.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0)
        {
            await destination.WriteAsync(buffer.AsMemory(0, read), cancellationToken).ConfigureAwait(false);
        }

        await destination.FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Whether the open file is still the one at <paramref name="path"/> (its descriptor's name, as /proc shows it).</summary>
    private static bool IsStill(FileStream file, string path)
    {
        var link = new FileInfo($"/proc/self/fd/{file.SafeFileHandle.DangerousGetHandle()}").LinkTarget;
        return link is null || link == Path.GetFullPath(path);
    }
}

/// <summary>
/// Writes a console log that stays within <paramref name="maxBytes"/> on disk, the newest output kept: when the file
/// would pass half the cap it is moved to <c>PATH.1</c> (replacing the older one) and a new file is begun.
/// Not thread-safe; <see cref="Flush"/> makes what was written visible to readers.
/// </summary>
public sealed class ConsoleLogWriter(string path, long maxBytes) : IDisposable
{
    private readonly long _fileMax = Math.Max(1, maxBytes / 2);
    private FileStream? _file;

    public void WriteLine(string line) => Write(Encoding.UTF8.GetBytes(line + "\n"));

    /// <summary>Writes output as it came, cut anywhere (a serial port's bytes); of more than the cap only the end is kept.</summary>
    public void Write(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length > _fileMax)
        {
            bytes = bytes[^(int)_fileMax..];
        }

        _file ??= Open();
        if (_file.Length + bytes.Length > _fileMax)
        {
            _file.Dispose();
            File.Move(path, ConsoleLog.RotatedPath(path), overwrite: true);
            _file = Open();
        }

        _file.Write(bytes);
    }

    public void Flush() => _file?.Flush();

    public void Dispose()
    {
        _file?.Dispose();
        _file = null;
    }

    private FileStream Open() => new(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete, 64 * 1024);
}
