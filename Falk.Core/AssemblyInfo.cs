// Falk drives Unix sockets, process groups and /proc: it runs on Linux only.
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]
