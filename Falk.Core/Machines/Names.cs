using System.Security.Cryptography;
using System.Text.RegularExpressions;

namespace Falk.Core.Machines;

/// <summary>Validation of names and ids that come from users or config (<c>[A-Za-z0-9._-]</c>, bounded).</summary>
public static partial class Names
{
    public const int MaxNameLength = 64;
    public const int MaxLabels = 32;
    public const int MaxLabelKeyLength = 63;
    public const int MaxLabelValueLength = 256;

    [GeneratedRegex("^[A-Za-z0-9._-]+$")]
    private static partial Regex NamePattern();

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._/-]*$")]
    private static partial Regex LabelKeyPattern();

    /// <summary>Returns why <paramref name="value"/> is not a valid name, or null when it is.</summary>
    public static string? Problem(string? value, int maxLength = MaxNameLength)
    {
        if (string.IsNullOrEmpty(value))
        {
            return "must not be empty";
        }

        if (value.Length > maxLength)
        {
            return $"must be at most {maxLength} characters";
        }

        if (!NamePattern().IsMatch(value) || value is "." or "..")
        {
            return "may contain only letters, digits, '.', '_' and '-'";
        }

        return null;
    }

    public static bool IsValid(string? value) => Problem(value) is null;

    /// <summary>Validates labels; throws <see cref="InvalidRequestException"/> naming the offending key.</summary>
    public static void ValidateLabels(IReadOnlyDictionary<string, string>? labels)
    {
        if (labels is null)
        {
            return;
        }

        if (labels.Count > MaxLabels)
        {
            throw new InvalidRequestException("labels", $"labels: at most {MaxLabels} labels are allowed, got {labels.Count}");
        }

        foreach (var (key, value) in labels)
        {
            if (key.Length is 0 or > MaxLabelKeyLength || !LabelKeyPattern().IsMatch(key))
            {
                throw new InvalidRequestException($"labels.{key}",
                    $"label key '{Truncate(key)}' must be 1-{MaxLabelKeyLength} characters of letters, digits, '.', '_', '/' and '-', starting with a letter or digit");
            }

            if (value is null || value.Length > MaxLabelValueLength || value.Any(char.IsControl))
            {
                throw new InvalidRequestException($"labels.{key}",
                    $"label '{key}' must have a value of at most {MaxLabelValueLength} characters without control characters");
            }
        }
    }

    /// <summary>A new machine id: 'm' and 11 random lowercase letters and digits (valid as a container and file name).</summary>
    public static string NewMachineId() =>
        "m" + RandomNumberGenerator.GetString("abcdefghijklmnopqrstuvwxyz0123456789", 11);

    private static string Truncate(string value) => value.Length <= 40 ? value : value[..40] + "…";
}
