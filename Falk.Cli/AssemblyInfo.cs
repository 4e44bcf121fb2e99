// Unix domain sockets as the transport: Linux only, like the daemon.
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]
