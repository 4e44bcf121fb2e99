namespace Falk.Core.Ssh;

/// <summary>The SSH server presented a host key other than the pinned one. Never "ready".</summary>
public sealed class HostKeyMismatchException(string endpoint, IReadOnlyList<HostKey> expected, HostKey presented)
    : FalkException("host-key-mismatch",
        $"{endpoint} presented host key {presented.Type} {presented.FingerprintSha256}, expected {string.Join(" or ", expected.Select(k => $"{k.Type} {k.FingerprintSha256}"))}")
{
    public IReadOnlyList<HostKey> Expected { get; } = expected;

    public HostKey Presented { get; } = presented;

    public override string Title => "SSH host key mismatch";

    public override IReadOnlyDictionary<string, object?> Details => new Dictionary<string, object?>
    {
        ["expected_fingerprints"] = Expected.Select(k => k.FingerprintSha256).ToArray(),
        ["presented_fingerprint"] = Presented.FingerprintSha256,
        ["presented_key"] = Presented.PublicKeyLine,
    };
}
