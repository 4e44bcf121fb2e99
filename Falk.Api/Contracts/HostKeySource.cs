using Falk.Core.Machines;

namespace Falk.Api.Contracts;

/// <summary>
/// Where an SSH host key comes from, in one word wherever it is shown: <c>config</c> (the template's
/// <c>ssh_known_host_key</c>), <c>machine</c> (made for this one machine at create), <c>image</c> (read out of the
/// machine's image), <c>observed</c> (whatever the server showed: not verified), <c>none</c> (no key known yet).
/// <c>config</c>, <c>machine</c> and <c>image</c> keys are verified.
/// </summary>
public enum HostKeySource
{
    Config,
    Machine,
    Image,
    Observed,
    None,
}

internal static class HostKeySourceWire
{
    public static HostKeySource FromCore(string source) => source switch
    {
        HostKeySources.Config => HostKeySource.Config,
        HostKeySources.Machine => HostKeySource.Machine,
        HostKeySources.Image => HostKeySource.Image,
        HostKeySources.Observed => HostKeySource.Observed,
        _ => HostKeySource.None,
    };
}
