using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace Falk.Core.Ssh;

/// <summary>An SSH public host key: its type and the key blob as sent in the key exchange.</summary>
public sealed class HostKey : IEquatable<HostKey>
{
    private static readonly string[] KnownTypes =
    [
        "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-dss",
    ];

    public HostKey(string type, byte[] blob)
    {
        Type = type;
        Blob = blob;
        FingerprintSha256 = "SHA256:" + Convert.ToBase64String(SHA256.HashData(blob)).TrimEnd('=');
    }

    /// <summary>Key type as named in the blob, e.g. <c>ssh-ed25519</c>.</summary>
    public string Type { get; }

    public byte[] Blob { get; }

    /// <summary>The fingerprint as <c>ssh-keygen -l</c> prints it.</summary>
    public string FingerprintSha256 { get; }

    /// <summary><c>TYPE BASE64</c>, the form of a .pub file without the comment.</summary>
    public string PublicKeyLine => $"{Type} {Convert.ToBase64String(Blob)}";

    /// <summary>The host key algorithms an SSH server may use with this key.</summary>
    public IReadOnlyList<string> Algorithms => Type == "ssh-rsa"
        ? ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]
        : [Type];

    /// <summary>A known_hosts line for this key at <paramref name="host"/>:<paramref name="port"/>.</summary>
    public string KnownHostsLine(string host, int port) =>
        port == 22 ? $"{host} {PublicKeyLine}" : $"[{host}]:{port} {PublicKeyLine}";

    /// <summary>A key from the blob an SSH server sent; the type is read from the blob itself.</summary>
    public static HostKey FromBlob(byte[] blob) => new(ReadBlobType(blob) ?? "unknown", blob);

    /// <summary>
    /// Parses one line of a .pub file (<c>TYPE BASE64 [comment]</c>) or of a known_hosts file
    /// (<c>[markers] HOSTS TYPE BASE64 [comment]</c>). Returns null and the reason when the line is not a key.
    /// </summary>
    public static HostKey? TryParse(string line, out string? problem)
    {
        problem = null;
        var fields = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
        for (var i = 0; i + 1 < fields.Length; i++)
        {
            if (!KnownTypes.Contains(fields[i]))
            {
                continue;
            }

            byte[] blob;
            try
            {
                blob = Convert.FromBase64String(fields[i + 1]);
            }
            catch (FormatException)
            {
                problem = $"the {fields[i]} key is not valid base64";
                return null;
            }

            var embedded = ReadBlobType(blob);
            if (embedded != fields[i])
            {
                problem = $"the key data says '{embedded ?? "?"}' but the line says '{fields[i]}'";
                return null;
            }

            return new HostKey(fields[i], blob);
        }

        problem = $"no SSH public key found (expected one of {string.Join(", ", KnownTypes)} followed by base64 data)";
        return null;
    }

    /// <summary>Parses a whole .pub or known_hosts text; comments, blank lines and @cert-authority lines are skipped.</summary>
    public static IReadOnlyList<HostKey> ParseMany(string text, out string? problem)
    {
        problem = null;
        var keys = new List<HostKey>();
        foreach (var raw in text.Split('\n'))
        {
            var line = raw.Trim();
            if (line.Length == 0 || line.StartsWith('#') || line.StartsWith("@cert-authority", StringComparison.Ordinal) || line.StartsWith("@revoked", StringComparison.Ordinal))
            {
                continue;
            }

            var key = TryParse(line, out var lineProblem);
            if (key is null)
            {
                problem = lineProblem;
                return [];
            }

            keys.Add(key);
        }

        if (keys.Count == 0)
        {
            problem = "contains no SSH public key";
        }

        return keys;
    }

    private static string? ReadBlobType(byte[] blob)
    {
        if (blob.Length < 4)
        {
            return null;
        }

        var length = BinaryPrimitives.ReadUInt32BigEndian(blob);
        return length > 64 || 4 + length > blob.Length ? null : Encoding.ASCII.GetString(blob, 4, (int)length);
    }

    public bool Equals(HostKey? other) => other is not null && Type == other.Type && Blob.AsSpan().SequenceEqual(other.Blob);

    public override bool Equals(object? obj) => Equals(obj as HostKey);

    public override int GetHashCode() => FingerprintSha256.GetHashCode(StringComparison.Ordinal);

    public override string ToString() => $"{Type} {FingerprintSha256}";
}
