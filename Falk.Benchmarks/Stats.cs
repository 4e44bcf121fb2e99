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

    /// <summary>The value below which <paramref name="fraction"/> of the values lie (linear between neighbours).</summary>
    public static double Quantile(IReadOnlyList<double> values, double fraction)
    {
        var sorted = values.Order().ToList();
        if (sorted.Count == 0)
        {
            return double.NaN;
        }

        var position = fraction * (sorted.Count - 1);
        var below = (int)Math.Floor(position);
        var above = Math.Min(below + 1, sorted.Count - 1);
        return sorted[below] + ((position - below) * (sorted[above] - sorted[below]));
    }

    /// <summary>Median, quartiles and extremes.</summary>
    public static string DescribeSpread(string what, IReadOnlyList<double> milliseconds) =>
        $"{what,-24} n={milliseconds.Count,3}  median {Median(milliseconds),7:0.0} ms  quartiles {Quantile(milliseconds, 0.25),7:0.0}–{Quantile(milliseconds, 0.75),7:0.0} ms  min {milliseconds.Min(),7:0.0} ms  max {milliseconds.Max(),7:0.0} ms";
}
