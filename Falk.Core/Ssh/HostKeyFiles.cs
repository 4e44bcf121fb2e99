using Falk.Core.Machines;
using Falk.Core.Processes;

namespace Falk.Core.Ssh;

/// <summary>
/// A host key pair made for one machine by <c>ssh-keygen</c> (ed25519), kept in the machine's work folder (0600, as
/// ssh-keygen writes it) and handed to its SSH server, so that no other machine's guest holds the key that proves
/// this machine's identity.
/// </summary>
public static class HostKeyFiles
{
    public const string PrivateKeyName = "ssh_host_ed25519_key";

    public static string PrivateKeyPath(string directory) => Path.Combine(directory, PrivateKeyName);

    public static string PublicKeyPath(string directory) => PrivateKeyPath(directory) + ".pub";

    /// <summary>Makes a new key pair in <paramref name="directory"/> and returns its public key.</summary>
    public static async Task<HostKey> MakeAsync(IProcessRunner runner, string directory, string comment, CancellationToken cancellationToken)
    {
        try
        {
            await runner.RunAsync(
                new ProcessSpec(["ssh-keygen", "-q", "-t", "ed25519", "-N", string.Empty, "-C", comment, "-f", PrivateKeyPath(directory)]),
                TimeSpan.FromSeconds(30),
                cancellationToken).ConfigureAwait(false);
        }
        catch (ProcessFailedException e)
        {
            throw new BackendOperationException($"could not make a host key in {directory}: {e.Message}", e);
        }

        return TryRead(directory) ?? throw new BackendOperationException($"ssh-keygen wrote no readable public key to {PublicKeyPath(directory)}");
    }

    /// <summary>The public key made earlier in <paramref name="directory"/>, or null when there is none.</summary>
    public static HostKey? TryRead(string directory)
    {
        try
        {
            return HostKey.TryParse(File.ReadAllText(PublicKeyPath(directory)), out _);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}
