using System.Text;

namespace Falk.Core.Processes;

/// <summary>Keeps the last few kilobytes of a process's output, thread-safe, for error messages.</summary>
public sealed class OutputTail(int capacity = 8192)
{
    private readonly StringBuilder _buffer = new();
    private readonly Lock _lock = new();

    public void AppendLine(string line)
    {
        lock (_lock)
        {
            _buffer.Append(line).Append('\n');

            // Trimmed once it holds twice what is kept, so that many short lines do not each move the whole buffer.
            if (_buffer.Length > 2 * capacity)
            {
                _buffer.Remove(0, _buffer.Length - capacity);
            }
        }
    }

    /// <summary>The last <paramref name="maxLines"/> lines.</summary>
    public string Tail(int maxLines = 20)
    {
        string text;
        lock (_lock)
        {
            text = _buffer.Length > capacity ? _buffer.ToString(_buffer.Length - capacity, capacity) : _buffer.ToString();
        }

        var lines = text.TrimEnd('\n').Split('\n');
        return string.Join('\n', lines.Skip(Math.Max(0, lines.Length - maxLines)));
    }
}
