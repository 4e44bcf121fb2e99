namespace Falk.Benchmarks;

/// <summary>Small statistics over timings.</summary>
public static class Stats
{
    public static double Median(IReadOnlyList<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count == 0 ? double.NaN
            : sorted.Count % 2 == 1 ? sorted[sorted.Count / 2]
            : (sorted[(sorted.Count / 2) - 1] + sorted[sorted.Count / 2]) / 2;
    }

    public static string Describe(string what, IReadOnlyList<double> milliseconds) =>
        $"{what,-40} n={milliseconds.Count,3}  median {Median(milliseconds),8:0.0} ms  min {milliseconds.Min(),8:0.0} ms  max {milliseconds.Max(),8:0.0} ms";
}
