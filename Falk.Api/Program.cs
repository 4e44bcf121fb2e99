using Falk.Api.Endpoints;
using Falk.Api.Hosting;
using Falk.Core;
using Falk.Core.Backends;
using Falk.Core.Config;
using Falk.Core.State;

var options = FalkdOptions.Parse(args, out var argumentError);
if (argumentError is not null)
{
    await Console.Error.WriteLineAsync($"falkd: {argumentError}\n{FalkdOptions.Usage}");
    return 2;
}

if (options.ShowHelp)
{
    Console.WriteLine(FalkdOptions.Usage);
    return 0;
}

FalkConfig config;
AccessPolicy accessPolicy;
try
{
    config = ConfigLoader.Load(options.ConfigPath, BackendModules.Descriptors);
    accessPolicy = AccessPolicy.Create(config);
}
catch (ConfigException e)
{
    foreach (var error in e.Errors)
    {
        await Console.Error.WriteLineAsync($"falkd: error: {error}");
    }

    return 1;
}

foreach (var warning in config.Warnings)
{
    await Console.Error.WriteLineAsync($"falkd: warning: {warning}");
}

if (options.CheckConfigOnly)
{
    Console.WriteLine($"{config.Path}: OK: daemon '{config.Daemon.Name}' on {config.Daemon.ControlSocket}, ports {config.Daemon.VmPorts}, {config.Templates.Count} templates: {string.Join(", ", config.Templates.Select(t => $"[{t.Id}] {t.Name} ({t.Type})"))}");
    return 0;
}

// Everything falkd and its children create (falk.db, overlays, console logs, keys) is the daemon user's alone.
Falk.Core.Unix.UnixFiles.RestrictNewFiles();
StateDirectory stateDirectory;
try
{
    ControlSocket.Claim(config.Daemon.ControlSocket);
    stateDirectory = StateDirectory.Claim(config.Daemon.StateDirectory);
}
catch (Exception e) when (e is InvalidOperationException or IOException or UnauthorizedAccessException or ConfigException)
{
    await Console.Error.WriteLineAsync($"falkd: error: {e.Message}");
    return 1;
}

using var stateDirectoryLock = stateDirectory;

var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });
builder.WebHost.UseControlSocket(config.Daemon);
builder.Logging.AddFalkConsole();
builder.Services.AddFalkCore(config);
builder.Services.AddFalkApi(accessPolicy);

var app = builder.Build();
app.UseExceptionHandler();
app.UseStatusCodePages();
app.UseLiteralPaths();
app.UsePeerAccess();
app.UseSwagger();
app.UseSwaggerUI();
app.MapHealthEndpoints();
app.MapInfoEndpoints();
app.MapTemplateEndpoints();
app.MapMachineEndpoints();
app.MapSnapshotEndpoints();
app.MapEventEndpoints();
app.RemoveControlSocketOnStop(config.Daemon);
app.LogListening(config.Daemon);

// Non-zero when background work could not go on, so that a supervisor restarts the daemon (taken before the run
// ends, which disposes the services).
var faults = app.Services.GetRequiredService<Falk.Core.Machines.DaemonFaults>();
await app.RunAsync();
return faults.ExitCode;
