namespace Falk.Tests.Fixtures;

public static class RepositoryPaths
{
    /// <summary>The repository root: the first folder above the test binaries that holds Falk.slnx.</summary>
    public static string Root { get; } = FindRoot();

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Falk.slnx")))
            {
                return dir.FullName;
            }
        }

        throw new DirectoryNotFoundException("Falk.slnx not found above " + AppContext.BaseDirectory);
    }
}
