using Falk.Core.Config;

namespace Falk.Api.Hosting;

/// <summary>falkd's own command line: <c>falkd [--config FILE] [--check-config]</c>.</summary>
internal sealed record FalkdOptions(string ConfigPath, bool CheckConfigOnly, bool ShowHelp)
{
    public const string Usage = """
        usage: falkd [-c|--config FILE] [--check-config]

          -c, --config FILE   the falk.conf to use (default /etc/falk/falk.conf)
          --check-config      validate the config, print what it defines, and exit
          -h, --help          show this help
        """;

    /// <summary>Parses the arguments; an error is one readable line.</summary>
    public static FalkdOptions Parse(IReadOnlyList<string> args, out string? error)
    {
        error = null;
        var config = DaemonOptions.DefaultConfigPath;
        var check = false;
        var help = false;
        for (var i = 0; i < args.Count; i++)
        {
            switch (args[i])
            {
                case "-c" or "--config":
                    if (i + 1 >= args.Count)
                    {
                        error = $"{args[i]} needs a file name";
                        break;
                    }

                    config = args[++i];
                    break;
                case var a when a.StartsWith("--config=", StringComparison.Ordinal):
                    config = a["--config=".Length..];
                    break;
                case "--check-config":
                    check = true;
                    break;
                case "-h" or "--help":
                    help = true;
                    break;
                default:
                    error = $"unknown argument '{args[i]}'";
                    break;
            }

            if (error is not null)
            {
                break;
            }
        }

        return new FalkdOptions(config, check, help);
    }
}
