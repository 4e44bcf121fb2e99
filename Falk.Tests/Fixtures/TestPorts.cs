namespace Falk.Tests.Fixtures;

/// <summary>Gives each daemon of a test run its own vm_ports range, so parallel tests never compete for a port.</summary>
public static class TestPorts
{
    private static int _next = 21000 + (Environment.ProcessId % 40) * 500;

    public static (int First, int Last) NextRange(int count = 10)
    {
        var first = Interlocked.Add(ref _next, count) - count;
        return (first, first + count - 1);
    }
}
