namespace Falk.Tests.Fixtures;

/// <summary>
/// A fresh folder under /tmp, removed with everything in it. Short, because Unix socket paths are limited to 107 bytes.
/// Others may pass through it (0711, as /var/lib is), not list it: QEMU runs as its own user and must reach the
/// daemon's state folder and the base images in here, as it reaches /var/lib/falk on a real host.
/// </summary>
public sealed class TempDirectory : IDisposable
{
    public TempDirectory()
    {
        Path = Directory.CreateTempSubdirectory("falk-").FullName;
        System.IO.File.SetUnixFileMode(Path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
            // Already gone.
        }
    }
}
