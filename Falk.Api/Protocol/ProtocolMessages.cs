using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Falk.Api.Protocol;

/// <summary>The two framings of the original control protocol: a connection starts in text and may switch.</summary>
internal enum ProtocolMode
{
    Text,
    Json,
}

/// <summary>A line that is not a valid request; answered with an <c>Error</c> at once.</summary>
internal sealed class ProtocolParseException(string message) : Exception(message);

/// <summary>One parsed request: its class name (as spelled on the wire in JSON) and its fields.</summary>
internal sealed record ProtocolRequest(string Class, IReadOnlyDictionary<string, object?> Fields)
{
    public string Text(string field) => (string)Fields[field]!;

    public string? OptionalText(string field) => Fields.GetValueOrDefault(field) as string;

    /// <summary>A run id, or null for the connection's current machine.</summary>
    public long? RunId => Fields.GetValueOrDefault("run_id") as long?;
}

/// <summary>One answer: its class and its fields in the original's order (the order text mode prints them in).</summary>
internal sealed record ProtocolAnswer(string Class, params (string Key, object? Value)[] Fields)
{
    public static ProtocolAnswer Ok() => new("OK", ("msg", string.Empty));

    public static ProtocolAnswer Error(string message) => new("Error", ("msg", message));
}

/// <summary>
/// The message classes of protocol version 0 and both of their framings: JSON objects with a <c>class</c>
/// key, and text lines <c>cmd positional… key=value…</c> with POSIX shell quoting.
/// </summary>
internal static class ProtocolMessages
{
    private enum Kind
    {
        Text,
        Integer,
        RunId,
        Boolean,
        Number,
    }

    private sealed record Field(string Name, Kind Kind, bool Required = true);

    private sealed record MessageClass(string Name, bool InText, Field[] Fields);

    private static readonly Field RunIdField = new("run_id", Kind.RunId, Required: false);

    private static readonly MessageClass[] Requests =
    [
        new("Login", true, [new("name", Kind.Text), new("source", Kind.Text, Required: false)]),
        new("Mode", true, [new("mode", Kind.Text)]),
        new("Version", false, [new("version", Kind.Integer)]),
        new("Help", true, []),
        new("List", true, []),
        new("Select", true, [new("name", Kind.Text)]),
        new("Prepare", true, [RunIdField, new("manage", Kind.Boolean, Required: false)]),
        new("Launch", true, [RunIdField]),
        new("GetConnectionInfo", true, [RunIdField]),
        new("Status", true, [RunIdField]),
        new("ShutdownWait", false, [RunIdField, new("timeout", Kind.Number)]),
        new("Terminate", true, [RunIdField]),
        new("Cleanup", true, [RunIdField]),
        new("Exit", true, []),
        new("Error", true, [new("msg", Kind.Text, Required: false)]),
    ];

    /// <summary>Answer classes (of either era): a client that sends one gets <c>OK</c>, whatever its fields.</summary>
    private static readonly string[] AnswerClasses =
        ["OK", "Welcome", "HelpText", "MachineList", "RunID", "ConnectionInfo", "VMStatus", "MachineStatus", "Message"];

    public static ProtocolRequest Parse(string line, ProtocolMode mode) =>
        mode == ProtocolMode.Json ? ParseJson(line) : ParseText(line);

    private static ProtocolRequest ParseJson(string line)
    {
        JsonElement root;
        try
        {
            using var document = JsonDocument.Parse(line);
            root = document.RootElement.Clone();
        }
        catch (JsonException e)
        {
            throw new ProtocolParseException($"JSONDecodeError({Repr(e.Message)})");
        }

        if (root.ValueKind != JsonValueKind.Object)
        {
            throw new ProtocolParseException("ValueError('a message is a JSON object')");
        }

        if (!root.TryGetProperty("class", out var classElement) || classElement.ValueKind != JsonValueKind.String)
        {
            throw new ProtocolParseException("KeyError('class')");
        }

        var name = classElement.GetString()!;
        if (AnswerClasses.Contains(name, StringComparer.Ordinal))
        {
            return new ProtocolRequest(name, new Dictionary<string, object?>());
        }

        var messageClass = Requests.FirstOrDefault(c => c.Name == name)
            ?? throw new ProtocolParseException($"ValueError('unknown message type {Repr(name)}')");
        var fields = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var property in root.EnumerateObject().Where(p => p.Name != "class"))
        {
            var field = messageClass.Fields.FirstOrDefault(f => f.Name == property.Name)
                ?? throw new ProtocolParseException($"TypeError('{name} got an unexpected field {Repr(property.Name)}')");
            fields[field.Name] = FromJson(name, field, property.Value);
        }

        return Complete(messageClass, fields);
    }

    private static object? FromJson(string className, Field field, JsonElement value) => (field.Kind, value.ValueKind) switch
    {
        (Kind.RunId, JsonValueKind.Null) => null,
        (Kind.Text, JsonValueKind.String) => value.GetString(),
        (Kind.Integer or Kind.RunId, JsonValueKind.Number) when value.TryGetInt64(out var number) => number,
        (Kind.Boolean, JsonValueKind.True or JsonValueKind.False) => value.GetBoolean(),
        (Kind.Number, JsonValueKind.Number) => value.GetDouble(),
        _ => throw new ProtocolParseException($"TypeError('{className}.{field.Name} must be {Describe(field.Kind)}, not {value.ValueKind.ToString().ToLowerInvariant()}')"),
    };

    private static ProtocolRequest ParseText(string line)
    {
        var words = ShellWords.Split(line);
        var command = words[0];
        var messageClass = Requests.FirstOrDefault(c => c.Name.Equals(command, StringComparison.OrdinalIgnoreCase));
        if (messageClass is null)
        {
            return AnswerClasses.FirstOrDefault(c => c.Equals(command, StringComparison.OrdinalIgnoreCase)) is { } answerClass
                ? new ProtocolRequest(answerClass, new Dictionary<string, object?>())
                : throw new ProtocolParseException($"ValueError('unknown message type {Repr(command)}')");
        }

        if (!messageClass.InText)
        {
            throw new ProtocolParseException($"ValueError('{messageClass.Name} has no text form: switch to json mode first')");
        }

        var fields = new Dictionary<string, object?>(StringComparer.Ordinal);
        var position = 0;
        var keywordsStarted = false;
        foreach (var word in words.Skip(1))
        {
            var equals = word.IndexOf('=', StringComparison.Ordinal);
            Field field;
            string value;
            if (equals > 0)
            {
                keywordsStarted = true;
                var key = word[..equals];
                field = messageClass.Fields.FirstOrDefault(f => f.Name == key)
                    ?? throw new ProtocolParseException($"TypeError('{messageClass.Name} got an unexpected field {Repr(key)}')");
                value = word[(equals + 1)..];
            }
            else
            {
                if (keywordsStarted)
                {
                    throw new ProtocolParseException("SyntaxError('positional argument follows keyword argument')");
                }

                if (position >= messageClass.Fields.Length)
                {
                    throw new ProtocolParseException($"TypeError('{messageClass.Name} takes {messageClass.Fields.Length} arguments')");
                }

                field = messageClass.Fields[position++];
                value = word;
            }

            if (!fields.TryAdd(field.Name, FromText(messageClass.Name, field, value)))
            {
                throw new ProtocolParseException($"TypeError('{messageClass.Name} got {Repr(field.Name)} twice')");
            }
        }

        return Complete(messageClass, fields);
    }

    private static object? FromText(string className, Field field, string value)
    {
        switch (field.Kind)
        {
            case Kind.Text:
                return value;
            case Kind.RunId when value == "None":
                return null;
            case Kind.Integer or Kind.RunId when long.TryParse(value, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var number):
                return number;
            case Kind.Boolean when value is "True" or "true" or "1":
                return true;
            case Kind.Boolean when value is "False" or "false" or "0":
                return false;
            case Kind.Number when double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var real):
                return real;
            default:
                throw new ProtocolParseException($"ValueError('{className}.{field.Name} must be {Describe(field.Kind)}, not {Repr(value)}')");
        }
    }

    private static ProtocolRequest Complete(MessageClass messageClass, Dictionary<string, object?> fields)
    {
        if (messageClass.Fields.FirstOrDefault(f => f.Required && !fields.ContainsKey(f.Name)) is { } missing)
        {
            throw new ProtocolParseException($"TypeError('{messageClass.Name} is missing the field {Repr(missing.Name)}')");
        }

        return new ProtocolRequest(messageClass.Name, fields);
    }

    private static string Describe(Kind kind) => kind switch
    {
        Kind.Text => "a string",
        Kind.Integer => "an integer",
        Kind.RunId => "an integer or null",
        Kind.Boolean => "a boolean",
        _ => "a number",
    };

    /// <summary>The answer as one line (with its newline) in <paramref name="mode"/>, as the Python daemon wrote it.</summary>
    public static string Format(ProtocolAnswer answer, ProtocolMode mode)
    {
        var line = new StringBuilder();
        if (mode == ProtocolMode.Json)
        {
            line.Append('{');
            foreach (var (key, value) in answer.Fields)
            {
                line.Append(JsonString(key)).Append(": ");
                AppendJson(line, value);
                line.Append(", ");
            }

            line.Append("\"class\": ").Append(JsonString(answer.Class)).Append('}');
        }
        else
        {
            line.Append(answer.Class.ToLowerInvariant());
            foreach (var (key, value) in answer.Fields)
            {
                line.Append(' ').Append(key).Append('=').Append(ShellWords.Quote(PythonStr(value)));
            }
        }

        return line.Append('\n').ToString();
    }

    private static void AppendJson(StringBuilder line, object? value)
    {
        switch (value)
        {
            case null:
                line.Append("null");
                break;
            case bool flag:
                line.Append(flag ? "true" : "false");
                break;
            case string text:
                line.Append(JsonString(text));
                break;
            case IReadOnlyDictionary<string, string[]> map:
                line.Append('{').AppendJoin(", ", map.Select(e => $"{JsonString(e.Key)}: [{string.Join(", ", e.Value.Select(JsonString))}]")).Append('}');
                break;
            default:
                line.Append(Convert.ToString(value, CultureInfo.InvariantCulture));
                break;
        }
    }

    /// <summary>A JSON string as Python's json.dumps writes it (ensure_ascii: everything beyond ASCII escaped).</summary>
    private static string JsonString(string value)
    {
        var text = new StringBuilder("\"");
        foreach (var c in value)
        {
            text.Append(c switch
            {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                '\b' => "\\b",
                '\f' => "\\f",
                < ' ' or > '~' => $"\\u{(int)c:x4}",
                _ => c.ToString(),
            });
        }

        return text.Append('"').ToString();
    }

    /// <summary>Python's <c>str()</c> of a field value, which text mode prints.</summary>
    private static string PythonStr(object? value) => value switch
    {
        null => "None",
        bool flag => flag ? "True" : "False",
        string text => text,
        IReadOnlyDictionary<string, string[]> map =>
            "{" + string.Join(", ", map.Select(e => $"{Repr(e.Key)}: [{string.Join(", ", e.Value.Select(Repr))}]")) + "}",
        _ => Convert.ToString(value, CultureInfo.InvariantCulture) ?? string.Empty,
    };

    /// <summary>Python's <c>repr()</c> of a string, for error messages in the original's words.</summary>
    public static string Repr(string value) =>
        value.Contains('\'', StringComparison.Ordinal) && !value.Contains('"', StringComparison.Ordinal)
            ? $"\"{value.Replace("\\", "\\\\", StringComparison.Ordinal)}\""
            : $"'{value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("'", "\\'", StringComparison.Ordinal)}'";
}
