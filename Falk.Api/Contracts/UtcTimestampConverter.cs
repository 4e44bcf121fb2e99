using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Falk.Api.Contracts;

/// <summary>
/// Every time on the wire is UTC with <c>Z</c> and millisecond precision (<c>2026-12-04T20:06:42.998Z</c>), as Docker,
/// podman, LXD and Kubernetes write them; on input, any ISO 8601 form System.Text.Json reads is still accepted.
/// </summary>
public sealed class UtcTimestampConverter : JsonConverter<DateTimeOffset>
{
    public const string Format = "yyyy-MM-dd'T'HH:mm:ss.fff'Z'";

    public const string Pattern = @"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$";

    public const string Example = "2026-12-04T20:06:42.998Z";

    public override DateTimeOffset Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => reader.GetDateTimeOffset();

    public override void Write(Utf8JsonWriter writer, DateTimeOffset value, JsonSerializerOptions options) =>
        writer.WriteStringValue(value.UtcDateTime.ToString(Format, CultureInfo.InvariantCulture));
}
