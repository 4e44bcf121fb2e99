using Falk.Api.Endpoints;
using Falk.Core.Config;

namespace Falk.Api.Hosting;

internal static class LifetimeExtensions
{
    /// <summary>One line per event with a timestamp; the framework's per-request chatter only at warning level.</summary>
    public static ILoggingBuilder AddFalkConsole(this ILoggingBuilder logging)
    {
        logging.ClearProviders();
        logging.AddSimpleConsole(options =>
        {
            options.SingleLine = true;
            options.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ ";
            options.UseUtcTimestamp = true;
        });
        logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
        logging.AddFilter("Microsoft.Hosting.Lifetime", LogLevel.Warning);
        return logging;
    }

    /// <summary>Deletes the socket file after the server stopped listening (SIGTERM, SIGINT).</summary>
    public static WebApplication RemoveControlSocketOnStop(this WebApplication app, DaemonOptions daemon)
    {
        app.Lifetime.ApplicationStopped.Register(() =>
        {
            if (ControlSocket.Remove(daemon.ControlSocket))
            {
                ApiLog.SocketRemoved(app.Logger, daemon.ControlSocket);
            }
        });
        return app;
    }

    public static WebApplication LogListening(this WebApplication app, DaemonOptions daemon)
    {
        app.Lifetime.ApplicationStarted.Register(() =>
        {
            var config = app.Services.GetRequiredService<FalkConfig>();
            foreach (var warning in config.Warnings)
            {
                ApiLog.ConfigWarning(app.Logger, warning);
            }

            ApiLog.Listening(app.Logger, InfoEndpoints.DaemonVersion, daemon.ControlSocket,
                Convert.ToString((int)daemon.ControlSocketPermissions, 8).PadLeft(3, '0'),
                daemon.ControlSocketGroup ?? "(daemon's)");
        });
        return app;
    }
}
