namespace Falk.Core.Config;

/// <summary>
/// A backend's options of the <c>[falk]</c> section that are only wrong once a template uses the backend (a user QEMU
/// runs as, which need not exist on a host without QEMU templates): the loader reports the problem then, as one line.
/// </summary>
public interface ICheckedWhenUsed
{
    /// <summary>What is wrong, as "key: problem"; null when nothing is.</summary>
    string? ProblemWhenUsed { get; }
}
