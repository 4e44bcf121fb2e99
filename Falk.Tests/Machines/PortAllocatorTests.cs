using System.Net;
using System.Net.Sockets;
using Falk.Core.Config;
using Falk.Core.Machines;
using Falk.Tests.Fixtures;

namespace Falk.Tests.Machines;

public sealed class PortAllocatorTests
{
    [Fact]
    public void Ports_are_handed_out_once_each_until_the_range_is_used_up()
    {
        var allocator = new PortAllocator(new PortRange(100, 104), _ => true);

        var ports = Enumerable.Range(0, 5).Select(_ => allocator.TryAllocate()).ToList();

        ports.Should().OnlyHaveUniqueItems().And.BeEquivalentTo(new int?[] { 100, 101, 102, 103, 104 });
        allocator.TryAllocate().Should().BeNull();
        allocator.InUseCount.Should().Be(5);
    }

    [Fact]
    public void A_released_port_is_not_reused_at_once_but_after_the_others()
    {
        var allocator = new PortAllocator(new PortRange(100, 102), _ => true);
        var first = allocator.TryAllocate();
        allocator.Release(first!.Value);

        allocator.TryAllocate().Should().Be(101);
        allocator.TryAllocate().Should().Be(102);
        allocator.TryAllocate().Should().Be(100);
    }

    [Fact]
    public void Ports_held_on_the_host_are_skipped()
    {
        var allocator = new PortAllocator(new PortRange(100, 103), port => port % 2 == 1);

        allocator.TryAllocate().Should().Be(101);
        allocator.TryAllocate().Should().Be(103);
        allocator.TryAllocate().Should().BeNull();
    }

    [Fact]
    public void Concurrent_allocations_never_share_a_port()
    {
        var allocator = new PortAllocator(new PortRange(1000, 1999), _ => true);

        var ports = new System.Collections.Concurrent.ConcurrentBag<int?>();
        Parallel.For(0, 1000, _ => ports.Add(allocator.TryAllocate()));

        ports.Should().NotContainNulls().And.OnlyHaveUniqueItems().And.HaveCount(1000);
    }

    [Fact]
    public void A_fixed_port_is_reserved_once()
    {
        var allocator = new PortAllocator(new PortRange(100, 104), _ => true);

        allocator.TryReserve(2222).Should().BeTrue();
        allocator.TryReserve(2222).Should().BeFalse();
        allocator.Release(2222);
        allocator.TryReserve(2222).Should().BeTrue();
    }

    [Fact]
    public void The_host_check_sees_a_real_listener_on_loopback()
    {
        var (port, _) = TestPorts.NextRange(1);
        PortAllocator.IsFreeOnHost(port).Should().BeTrue();

        using var listener = new TcpListener(IPAddress.Loopback, port);
        listener.Start();

        PortAllocator.IsFreeOnHost(port).Should().BeFalse();
        new PortAllocator(new PortRange(port, port)).TryAllocate().Should().BeNull();
    }

    [Fact]
    public void The_host_check_sees_a_real_listener_on_the_ipv6_loopback()
    {
        var (port, _) = TestPorts.NextRange(1);
        using var listener = new Socket(AddressFamily.InterNetworkV6, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.IPv6Loopback, port));
        listener.Listen();

        PortAllocator.IsFreeOnHost(port).Should().BeFalse("a client resolving localhost to ::1 would reach that listener");
        new PortAllocator(new PortRange(port, port)).TryAllocate().Should().BeNull();
    }
}
