using System.Net;
using System.Net.Sockets;
using Falk.Core.Ssh;
using Falk.Core.Unix;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Ssh;

/// <summary>The listener check against real sockets of this process, read back from /proc.</summary>
public sealed class SshListenerGuardTests
{
    [Fact]
    public void A_listener_of_the_machine_passes_and_one_of_another_process_is_named_with_its_pid_and_uid()
    {
        var (port, _) = TestPorts.NextRange(1);
        using var listener = new TcpListener(IPAddress.Loopback, port);
        listener.Start();

        new SshListenerGuard("m1", IPAddress.Loopback, port, pid => pid == Environment.ProcessId).ThrowIfTaken();
        var taken = FluentActions.Invoking(() => new SshListenerGuard("m1", IPAddress.Loopback, port, _ => false).ThrowIfTaken())
            .Should().Throw<SshEndpointTakenException>().Which;

        taken.IntruderPids.Should().Equal(Environment.ProcessId);
        taken.Message.Should().Contain($"127.0.0.1:{port}").And.Contain($"pid {Environment.ProcessId}").And.Contain("uid 0");
    }

    [Fact]
    public void Wildcard_listeners_reach_the_loopback_and_the_ipv6_loopback_does_not_reach_ipv4()
    {
        var (port, _) = TestPorts.NextRange(1);
        using var v6 = new Socket(AddressFamily.InterNetworkV6, SocketType.Stream, ProtocolType.Tcp);
        v6.Bind(new IPEndPoint(IPAddress.IPv6Loopback, port));
        v6.Listen();

        ListeningSockets.Reaching(IPAddress.IPv6Loopback, port).Should().ContainSingle().Which.Address.Should().Be(IPAddress.IPv6Loopback);
        ListeningSockets.Reaching(IPAddress.Loopback, port).Should().BeEmpty();

        var (anyPort, _) = TestPorts.NextRange(1);
        using var any = new TcpListener(IPAddress.Any, anyPort);
        any.Start();
        ListeningSockets.Reaching(IPAddress.Loopback, anyPort).Should().ContainSingle().Which.Address.Should().Be(IPAddress.Any);
    }

    [Fact]
    public void The_kernels_socket_diagnostics_list_the_listeners_proc_lists()
    {
        var (port, _) = TestPorts.NextRange(1);
        using var v4 = new TcpListener(IPAddress.Loopback, port);
        v4.Start();
        var (v6Port, _) = TestPorts.NextRange(1);
        using var dual = new Socket(AddressFamily.InterNetworkV6, SocketType.Stream, ProtocolType.Tcp);
        dual.Bind(new IPEndPoint(IPAddress.IPv6Any, v6Port));
        dual.Listen();

        var viaNetlink = SockDiag.Listening(AddressFamily.InterNetwork).Concat(SockDiag.Listening(AddressFamily.InterNetworkV6)).ToList();

        viaNetlink.Should().Contain(s => s.Port == port && s.Address.Equals(IPAddress.Loopback) && s.Uid == 0);
        viaNetlink.Should().Contain(s => s.Port == v6Port && s.Address.Equals(IPAddress.IPv6Any));
        // Sockets of other tests come and go meanwhile: this test's own must be the same in both, inode and all.
        var fromProc = ListeningSockets.FromProcTables();
        viaNetlink.Where(s => s.Port == port || s.Port == v6Port).Should().BeEquivalentTo(fromProc.Where(s => s.Port == port || s.Port == v6Port));
    }

    [Fact]
    public void A_candidate_of_the_machine_that_does_not_hold_the_listener_does_not_vouch_for_it()
    {
        var (port, _) = TestPorts.NextRange(1);
        using var listener = new TcpListener(IPAddress.Loopback, port);
        listener.Start();
        using var sleeper = System.Diagnostics.Process.Start("sleep", "30");
        try
        {
            // The machine owns only its candidate, a process without the socket: the listener (this test's) is another's.
            var taken = FluentActions.Invoking(() => new SshListenerGuard("m1", IPAddress.Loopback, port, pid => pid == sleeper.Id, () => [sleeper.Id]).ThrowIfTaken())
                .Should().Throw<SshEndpointTakenException>().Which;
            taken.IntruderPids.Should().Equal(Environment.ProcessId);

            // A candidate that holds it and is the machine's vouches without a scan of every process.
            new SshListenerGuard("m1", IPAddress.Loopback, port, pid => pid == Environment.ProcessId, () => [sleeper.Id, Environment.ProcessId]).ThrowIfTaken();
        }
        finally
        {
            sleeper.Kill();
        }
    }
}
