using System.Runtime.InteropServices;

namespace Falk.Cli;

/// <summary>
/// Ctrl-C and SIGTERM cancel <see cref="Token"/>, so every step unwinds and deletes what it made; while an SSH
/// session runs in the terminal, Ctrl-C belongs to that session (the remote shell) and is left alone.
/// </summary>
public sealed class SignalGate : IDisposable
{
    private readonly CancellationTokenSource _cancel = new();
    private readonly PosixSignalRegistration _interrupt;
    private readonly PosixSignalRegistration _terminate;

    public SignalGate()
    {
        _interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        _terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
    }

    public CancellationToken Token => _cancel.Token;

    public bool Interrupted => _cancel.IsCancellationRequested;

    /// <summary>True while an interactive program (ssh) owns the terminal.</summary>
    public bool Forwarding { get; set; }

    private void OnSignal(PosixSignalContext context)
    {
        context.Cancel = true;
        if (context.Signal == PosixSignal.SIGINT && Forwarding)
        {
            return;
        }

        _cancel.Cancel();
    }

    public void Dispose()
    {
        _interrupt.Dispose();
        _terminate.Dispose();
        _cancel.Dispose();
    }
}
