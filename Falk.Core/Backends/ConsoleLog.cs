namespace Falk.Core.Backends;

/// <summary>
/// A console log file that backends which write one (QEMU's serial port, a custom launch's output) serve: read whole,
/// or followed as it grows.
/// </summary>
public static class ConsoleLog
{
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(200);

    /// <summary>
    /// Copies the file to <paramref name="destination"/>; with <paramref name="follow"/> keeps copying what is appended
    /// until <paramref name="stopped"/> completes (then the rest is copied) or the token is cancelled.
    /// A file that does not exist yet reads as empty.
    /// </summary>
    public static async Task CopyAsync(string path, Stream destination, bool follow, Task? stopped, CancellationToken cancellationToken)
    {
        long position = 0;
        var buffer = new byte[16 * 1024];
        while (true)
        {
            var done = !follow || stopped is null || stopped.IsCompleted;
            if (File.Exists(path))
            {
                var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
                await using (file.ConfigureAwait(false))
                {
                    file.Position = Math.Min(position, file.Length);
                    int read;
                    while ((read = await file.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0)
                    {
                        await destination.WriteAsync(buffer.AsMemory(0, read), cancellationToken).ConfigureAwait(false);
                        position += read;
                    }
                }

                await destination.FlushAsync(cancellationToken).ConfigureAwait(false);
            }

            if (done)
            {
                return;
            }

            await Task.WhenAny(Task.Delay(PollInterval, cancellationToken), stopped!).ConfigureAwait(false);
            cancellationToken.ThrowIfCancellationRequested();
        }
    }
}
