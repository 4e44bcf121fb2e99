using System.Text;
using Falk.Core.Backends.Lxd;

namespace Falk.Tests.Backends.Lxd;

/// <summary>Telling LXD's replay of a stopped instance's whole log from new console output.</summary>
public sealed class LxdLaunchOutputTests
{
    private static readonly byte[] Boot = Encoding.ASCII.GetBytes("falk-init: bringing lo up\nServer listening on 0.0.0.0 port 22.\n");

    [Fact]
    public void The_whole_launch_output_handed_out_again_is_skipped_and_what_follows_it_is_kept()
    {
        var output = new LxdLaunchOutput();
        output.Add(Boot);
        output.Add(Filler(5_000));
        output.Add(Encoding.ASCII.GetBytes("MARK-0\n"));

        byte[] replay = [.. Boot, .. Filler(5_000), .. Encoding.ASCII.GetBytes("MARK-0\nfalk-init: shutting down\n")];

        output.ReplayedIn(replay).Should().Be(Boot.Length + 5_000 + 7);
    }

    [Fact]
    public void New_output_that_repeats_what_came_last_is_not_taken_for_a_replay_however_long()
    {
        // The console log file rotates at half of console_max_bytes: a file that holds only filler after a rotation
        // is a prefix of the next filler. The launch's own first bytes are what a replay starts with.
        var output = new LxdLaunchOutput();
        output.Add(Boot);
        output.Add(Filler(600_000));

        output.ReplayedIn(Filler(700_000)).Should().Be(0);
    }

    [Fact]
    public void A_replay_that_ends_otherwise_or_a_launch_output_too_short_to_tell_is_not_skipped()
    {
        var output = new LxdLaunchOutput();
        output.Add(Boot);
        output.Add(Filler(3_000));
        output.Add(Encoding.ASCII.GetBytes("MARK-1\n"));
        byte[] changedEnd = [.. Boot, .. Filler(3_000), .. Encoding.ASCII.GetBytes("MARK-2\n")];
        output.ReplayedIn(changedEnd).Should().Be(0);

        var short_ = new LxdLaunchOutput();
        short_.Add(Encoding.ASCII.GetBytes("ok\n"));
        short_.ReplayedIn(Encoding.ASCII.GetBytes("ok\nmore output after it\n")).Should().Be(0);
    }

    private static byte[] Filler(int length) => Enumerable.Repeat((byte)'x', length).ToArray();
}
