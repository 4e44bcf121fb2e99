using Falk.Core.Processes;

namespace Falk.Tests.Processes;

public sealed class CommandLineTests
{
    [Theory]
    [InlineData("a b  c", new[] { "a", "b", "c" })]
    [InlineData("sshd -f '/etc/my dir/x'", new[] { "sshd", "-f", "/etc/my dir/x" })]
    [InlineData("echo \"a \\\"quoted\\\" $HOME\"", new[] { "echo", "a \"quoted\" $HOME" })]
    [InlineData("a\\ b c", new[] { "a b", "c" })]
    [InlineData("x ''", new[] { "x", "" })]
    [InlineData("sh -c 'echo $1; rm -rf /' ; ls", new[] { "sh", "-c", "echo $1; rm -rf /", ";", "ls" })]
    [InlineData("a'b'\"c\"", new[] { "abc" })]
    public void It_splits_like_a_shell_without_expanding_anything(string line, string[] expected) =>
        CommandLine.Split(line).Should().Equal(expected);

    [Theory]
    [InlineData("a 'b")]
    [InlineData("a \"b")]
    public void An_unterminated_quote_is_an_error(string line)
    {
        var act = () => CommandLine.Split(line);
        act.Should().Throw<FormatException>().WithMessage("unterminated*");
    }

    [Fact]
    public void Quoting_round_trips_through_splitting()
    {
        string[] args = ["sshd", "-f", "/a b/c'd", "", "x$y"];
        CommandLine.Split(CommandLine.Quote(args)).Should().Equal(args);
    }
}
