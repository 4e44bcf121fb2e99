namespace Falk.Benchmarks;

/// <summary>A failed answer from falkd stops a benchmark with its status and problem text, not just the status.</summary>
internal static class Answers
{
    public static async Task EnsureSuccessAsync(this HttpResponseMessage response, CancellationToken cancellationToken)
    {
        if (!response.IsSuccessStatusCode)
        {
            var body = await response.Content.ReadAsStringAsync(cancellationToken);
            throw new HttpRequestException(
                $"{response.RequestMessage?.Method} {response.RequestMessage?.RequestUri?.PathAndQuery} answered {(int)response.StatusCode}: {body}",
                null,
                response.StatusCode);
        }
    }
}
