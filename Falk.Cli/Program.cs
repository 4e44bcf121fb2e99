using System.CommandLine;
using Falk.Cli;

var socketOption = new Option<string?>("--socket") { Description = "falkd's socket (default: $FALK_SOCKET, then /run/falk/falk.sock); unix:///path works too", Recursive = true };
var jsonOption = new Option<bool>("--json") { Description = "print the API's JSON, for scripts", Recursive = true };
var identityOption = new Option<string?>("--identity", "-i") { Description = "the private key ssh logs in with" };
var idArgument = new Argument<string>("id") { Description = "a machine id" };
var templateArgument = new Argument<string>("template") { Description = "a template name" };
var commandArgument = new Argument<string[]>("command") { Description = "run this in the machine instead of a shell (after --)", Arity = ArgumentArity.ZeroOrMore };

var root = new RootCommand("falk: machines for CI from falkd — management shells, throwaway copies, listing")
{
    Options = { socketOption, jsonOption },
};

var templates = new Command("templates", "list the machine kinds falkd offers");
templates.SetAction((parse, ct) => RunAsync(parse, async (api, output) =>
{
    output.Print(await api.GetAsync("v1/templates", ct), t => Views.Templates(t.AsArray(), Output.Width));
    return ExitCodes.Ok;
}));

var ls = new Command("ls", "list your machines (all machines for admins)");
ls.SetAction((parse, ct) => RunAsync(parse, async (api, output) =>
{
    output.Print(await api.GetAsync("v1/machines", ct), m => Views.Machines(m.AsArray(), DateTimeOffset.UtcNow, Output.Width));
    return ExitCodes.Ok;
}));

var show = new Command("show", "show one machine") { idArgument };
show.SetAction((parse, ct) => RunAsync(parse, async (api, output) =>
{
    output.Print(await api.GetAsync($"v1/machines/{parse.GetValue(idArgument)}", ct), m => Views.Fields(m.AsObject(), DateTimeOffset.UtcNow));
    return ExitCodes.Ok;
}));

var ssh = new Command("ssh", "log in to a machine (or run a command in it)") { idArgument, commandArgument };
ssh.Options.Add(identityOption);
ssh.SetAction((parse, ct) => RunAsync(parse, async (api, output) =>
{
    using var signals = new SignalGate();
    var info = await api.GetAsync($"v1/machines/{parse.GetValue(idArgument)}/ssh", ct);
    return await Ssh.RunAsync(info, parse.GetValue(commandArgument) ?? [], parse.GetValue(identityOption), signals);
}));

var followOption = new Option<bool>("--follow", "-f") { Description = "keep printing until the machine stops" };
var logs = new Command("logs", "print a machine's console (serial log or container output)") { idArgument };
logs.Options.Add(followOption);
logs.SetAction((parse, ct) => RunAsync(parse, async (api, _) =>
{
    await using var stdout = Console.OpenStandardOutput();
    await api.CopyTextAsync($"v1/machines/{parse.GetValue(idArgument)}/console?follow={(parse.GetValue(followOption) ? "true" : "false")}", stdout, ct);
    return ExitCodes.Ok;
}));

var rm = new Command("rm", "stop a machine hard and delete it") { idArgument };
rm.SetAction((parse, ct) => RunAsync(parse, async (api, output) =>
{
    await api.DeleteAsync($"v1/machines/{parse.GetValue(idArgument)}", ct);
    Output.Info($"{parse.GetValue(idArgument)} deleted");
    return ExitCodes.Ok;
}));

var events = new Command("events", "follow machine events as they happen");
events.SetAction((parse, ct) => RunAsync(parse, async (api, output) =>
{
    await foreach (var e in api.EventsAsync(ct))
    {
        Console.WriteLine(output.Json ? e.ToJsonString(Output.JsonLineOptions) : Views.Event(e));
    }

    return ExitCodes.Ok;
}));

var loginArgument = new Argument<string?>("name") { Description = "the name to log in as (default: your user name)", Arity = ArgumentArity.ZeroOrOne };
var shell = new Command("shell", "speak falkd's original control protocol on stdin/stdout, logged in: the forced command of Kevin's ssh key") { loginArgument };
shell.SetAction((parse, ct) => ControlShell.RunAsync(
    parse.GetValue(socketOption) ?? Environment.GetEnvironmentVariable("FALK_SOCKET") ?? DefaultSocket, parse.GetValue(loginArgument), ct));

var volatileOption = new Option<bool>("--volatile") { Description = "a throwaway copy: nothing is committed" };
var commitOption = new Option<bool>("--commit") { Description = "commit the changes without asking" };
var discardOption = new Option<bool>("--discard") { Description = "discard the changes without asking" };
var waitStoppedOption = new Option<int>("--wait-stopped") { Description = "seconds to wait for the guest to power off before committing", DefaultValueFactory = _ => 30 };
var leaseOption = new Option<int>("--lease") { Description = "lease in seconds, renewed while the session lasts", DefaultValueFactory = _ => 120 };

Command ManageCommand(string name, string description, bool alwaysVolatile)
{
    var command = new Command(name, description) { templateArgument, commandArgument };
    command.Options.Add(identityOption);
    command.Options.Add(leaseOption);
    if (!alwaysVolatile)
    {
        command.Options.Add(volatileOption);
        command.Options.Add(commitOption);
        command.Options.Add(discardOption);
        command.Options.Add(waitStoppedOption);
        command.Validators.Add(result =>
        {
            if (result.GetValue(commitOption) && result.GetValue(discardOption))
            {
                result.AddError("--commit and --discard cannot both be given");
            }
        });
    }

    command.SetAction((parse, _) => RunAsync(parse, async (api, output) =>
    {
        using var signals = new SignalGate();
        var options = new ManageOptions(
            parse.GetValue(templateArgument)!,
            alwaysVolatile || parse.GetValue(volatileOption),
            parse.GetValue(commitOption) ? true : parse.GetValue(discardOption) ? false : null,
            parse.GetValue(commandArgument) ?? [],
            parse.GetValue(identityOption),
            alwaysVolatile ? 0 : parse.GetValue(waitStoppedOption),
            parse.GetValue(leaseOption));
        return await new ManageSession(api, output, signals).RunAsync(options);
    }));
    return command;
}

root.Subcommands.Add(ManageCommand("manage", "boot a template in management mode, open a shell (or run a command), then commit or discard", alwaysVolatile: false));
root.Subcommands.Add(ManageCommand("run", "the same on a throwaway copy of a template: deleted afterwards, nothing committed", alwaysVolatile: true));
foreach (var command in new[] { templates, ls, show, ssh, logs, rm, events, shell })
{
    root.Subcommands.Add(command);
}

var parsed = root.Parse(args);
if (parsed.Errors.Count > 0)
{
    foreach (var error in parsed.Errors)
    {
        Output.Error(error.Message);
    }

    return ExitCodes.Usage;
}

// Our own signal handling (SignalGate) decides what Ctrl-C means; the parser's would cancel blindly.
return await parsed.InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = null });

async Task<int> RunAsync(ParseResult parse, Func<FalkApi, Output, Task<int>> action)
{
    var socket = parse.GetValue(socketOption) ?? Environment.GetEnvironmentVariable("FALK_SOCKET") ?? DefaultSocket;
    var output = new Output(parse.GetValue(jsonOption));
    using var api = new FalkApi(socket);
    try
    {
        return await action(api, output);
    }
    catch (FalkApiException e)
    {
        Output.Error(e.Message);
        return ExitCodes.ApiError;
    }
    catch (DaemonUnreachableException e)
    {
        Output.Error(e.Message);
        return ExitCodes.DaemonUnreachable;
    }
}

internal static partial class Program
{
    private const string DefaultSocket = "/run/falk/falk.sock";
}
