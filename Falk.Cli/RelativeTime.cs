using System.Globalization;

namespace Falk.Cli;

/// <summary>Times as people read them in a listing: "2 min ago", "in 59 min".</summary>
public static class RelativeTime
{
    public static string Format(DateTimeOffset time, DateTimeOffset now)
    {
        var span = time - now;
        var distance = span.Duration();
        if (distance < TimeSpan.FromSeconds(1))
        {
            return "now";
        }

        var text = distance switch
        {
            { TotalMinutes: < 1 } => $"{distance.Seconds} s",
            { TotalHours: < 1 } => $"{distance.Minutes} min",
            { TotalDays: < 1 } => distance.Minutes == 0 ? $"{distance.Hours} h" : $"{distance.Hours} h {distance.Minutes} min",
            { TotalDays: < 2 } => "1 day",
            _ => $"{(int)distance.TotalDays} days",
        };
        return span < TimeSpan.Zero ? $"{text} ago" : $"in {text}";
    }

    /// <summary>An API timestamp as a relative time, or the value as it is when it is not one.</summary>
    public static string? FormatApiValue(string? value, DateTimeOffset now) =>
        TryParse(value, out var time) ? Format(time, now) : value;

    public static bool TryParse(string? value, out DateTimeOffset time) =>
        DateTimeOffset.TryParse(value, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out time);
}
