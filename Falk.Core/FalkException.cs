namespace Falk.Core;

/// <summary>
/// Root of every error Falk reports on purpose. <see cref="Code"/> is a stable slug
/// (e.g. <c>host-key-mismatch</c>) that the API turns into a problem type.
/// </summary>
public abstract class FalkException : Exception
{
    protected FalkException(string code, string message, Exception? inner = null)
        : base(message, inner) => Code = code;

    /// <summary>A stable, kebab-case identifier of what went wrong.</summary>
    public string Code { get; }

    /// <summary>Short human title of the problem kind.</summary>
    public abstract string Title { get; }

    /// <summary>Extra facts a client may act on (state, fingerprints, …).</summary>
    public virtual IReadOnlyDictionary<string, object?> Details => new Dictionary<string, object?>();
}
