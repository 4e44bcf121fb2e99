using System.Text.Json;
using System.Text.Json.Serialization;
using Falk.Api.Contracts;
using Falk.Api.Errors;
using Falk.Api.Protocol;
using Falk.Core.Config;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.OpenApi;

namespace Falk.Api.Hosting;

internal static class FalkApiServiceCollectionExtensions
{
    public const long MaxRequestBodyBytes = 64 * 1024;

    /// <summary>snake_case JSON, problem details, the exception handler and the OpenAPI document.</summary>
    public static IServiceCollection AddFalkApi(this IServiceCollection services, AccessPolicy accessPolicy)
    {
        services.AddSingleton(accessPolicy);
        services.AddSingleton<RunIds>();
        services.AddSingleton<ConnectionLimits>();
        services.ConfigureHttpJsonOptions(options => ConfigureJson(options.SerializerOptions));
        services.Configure<Microsoft.AspNetCore.Mvc.JsonOptions>(options => ConfigureJson(options.JsonSerializerOptions));
        services.Configure<RouteHandlerOptions>(options => options.ThrowOnBadRequest = true);
        services.AddProblemDetails(options => options.CustomizeProblemDetails = FalkExceptionHandler.DescribeFrameworkProblem);
        services.AddExceptionHandler<FalkExceptionHandler>();
        services.AddEndpointsApiExplorer();
        services.AddSwaggerGen(options =>
        {
            options.SwaggerDoc("v1", new OpenApiInfo
            {
                Title = "Falk machine provider",
                Version = "v1",
                Description = "Throwaway VMs and containers for CI jobs, reached over SSH. Errors are RFC 9457 problem details.",
            });
            options.SupportNonNullableReferenceTypes();
            options.SchemaFilter<MachineStateSchemaFilter>();
            options.MapType<DateTimeOffset>(() => new OpenApiSchema
            {
                Type = JsonSchemaType.String,
                Format = "date-time",
                Pattern = UtcTimestampConverter.Pattern,
                Description = "UTC with Z and millisecond precision (ISO 8601 / RFC 3339)",
                Examples = [UtcTimestampConverter.Example],
            });
        });
        return services;
    }

    public static void ConfigureJson(JsonSerializerOptions options)
    {
        options.PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower;
        options.DictionaryKeyPolicy = null;
        // Host keys and fingerprints are base64: keep '+' and '/' readable for people using curl.
        options.Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping;
        options.UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow;
        // A number is a JSON number: the web defaults' "10" for 10 would let a mistyped stop or lease go through.
        options.NumberHandling = JsonNumberHandling.Strict;
        options.Converters.Add(new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower));
        options.Converters.Add(new UtcTimestampConverter());
    }

    /// <summary>Kestrel on the control socket only, HTTP/1.1 and the original control protocol (told apart by their first bytes), bounded bodies; the socket gets its mode and group before listen().</summary>
    public static IWebHostBuilder UseControlSocket(this IWebHostBuilder webHost, DaemonOptions daemon)
    {
        int? groupId = daemon.ControlSocketGroup is { } group ? Falk.Core.Unix.UnixAccounts.ResolveGroup(group) : null;
        webHost.UseSockets(options => options.CreateBoundListenSocket = endpoint =>
            endpoint is System.Net.Sockets.UnixDomainSocketEndPoint
                ? ControlSocket.Bind(daemon, groupId)
                : Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets.SocketTransportOptions.CreateDefaultBoundListenSocket(endpoint));
        webHost.ConfigureKestrel(options =>
        {
            options.Limits.MaxRequestBodySize = MaxRequestBodyBytes;
            options.ListenUnixSocket(daemon.ControlSocket, listen =>
            {
                // Who the peer is, read once at accept, for HTTP and the control protocol alike.
                listen.UsePeerIdentity();
                listen.Protocols = HttpProtocols.Http1;
                listen.UseControlProtocol();
            });
        });
        return webHost;
    }
}
