// The tests drive Linux-only parts (Unix sockets, /proc, process groups).
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]
