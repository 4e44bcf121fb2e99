namespace Falk.Core.Backends.Podman;

/// <summary>
/// The container now serving a podman machine. A snapshot restore replaces it by another; every replacement bumps a
/// generation, so the exit watch of the old container knows to follow the machine to its successor instead of
/// reporting the old one's removal as the machine's end.
/// </summary>
internal sealed class PodmanServingContainer(string containerId)
{
    private readonly Lock _lock = new();
    private string _id = containerId;
    private int _generation;
    private TaskCompletionSource? _replacement;

    public string Id
    {
        get
        {
            lock (_lock)
            {
                return _id;
            }
        }
    }

    /// <summary>The container now serving and its generation, read together.</summary>
    public (string Id, int Generation) Current
    {
        get
        {
            lock (_lock)
            {
                return (_id, _generation);
            }
        }
    }

    /// <summary>
    /// Starts replacing the container: from now on the watch of the current one waits for the returned source, which
    /// the caller completes when the replacement is made (or given up).
    /// </summary>
    public TaskCompletionSource BeginReplacement()
    {
        var replacement = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_lock)
        {
            _replacement = replacement;
            _generation++;
        }

        return replacement;
    }

    public void ReplaceWith(string containerId)
    {
        lock (_lock)
        {
            _id = containerId;
        }
    }

    /// <summary>Whether the container was replaced since <paramref name="generation"/>; waits until that replacement is done.</summary>
    public async Task<bool> ReplacedSinceAsync(int generation)
    {
        TaskCompletionSource? replacement;
        lock (_lock)
        {
            if (_generation == generation)
            {
                return false;
            }

            replacement = _replacement;
        }

        if (replacement is not null)
        {
            await replacement.Task.ConfigureAwait(false);
        }

        return true;
    }
}
