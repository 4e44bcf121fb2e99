using System.Globalization;
using System.Text.Json;
using Falk.Core.Config;
using Microsoft.Data.Sqlite;

namespace Falk.Core.State;

/// <summary>What the daemon records of a machine, so that a restarted daemon can reattach to it or clean it up.</summary>
/// <param name="Handle">The backend's own record of what it made (pid and start time, container id, overlay …), as JSON.</param>
public sealed record MachineRecord(
    string Id,
    string Type,
    string Template,
    bool Manage,
    int OwnerUid,
    int Port,
    IReadOnlyDictionary<string, string> Labels,
    DateTimeOffset CreatedAt,
    DateTimeOffset LeaseExpiresAt,
    string State,
    string? LastError,
    string WorkDirectory,
    string? Handle,
    string? IdempotencyKey,
    string? ObservedHostKey);

/// <summary>
/// The machines table in an embedded SQLite database under <c>state_dir</c>: a row is written before anything is made
/// for the machine and rewritten whole on every change, so a crash at any point leaves a record of what may exist.
/// Calls are short and serialized on one connection.
/// <para>
/// WAL with <c>synchronous=NORMAL</c>: a commit is in the write-ahead log (the kernel's page cache) when it returns, so a
/// killed or crashed daemon loses nothing; the log is fsynced at checkpoints, not at every commit. A power failure or
/// kernel crash may roll back the last commits before a checkpoint (never corrupt the file): a machine made in those
/// moments may then have no record, and its container is removed at the next start as one this daemon does not know
/// (every podman container carries the instance and machine labels), while its processes died with the power anyway.
/// <c>synchronous=FULL</c> cost one fsync per state change, four per boot, each a queue behind every other writer on the disk.
/// </para>
/// </summary>
public sealed class MachineStore : IDisposable
{
    private readonly SqliteConnection _connection;
    private readonly Lock _lock = new();

    public MachineStore(FalkConfig config)
    {
        Directory.CreateDirectory(config.Daemon.StateDirectory);
        Path = System.IO.Path.Combine(config.Daemon.StateDirectory, "falk.db");
        _connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = Path, Pooling = false }.ToString());
        _connection.Open();
        Execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;");
        Execute("""
            CREATE TABLE IF NOT EXISTS machines (
                id TEXT PRIMARY KEY,
                type TEXT NOT NULL,
                template TEXT NOT NULL,
                manage INTEGER NOT NULL,
                owner_uid INTEGER NOT NULL,
                port INTEGER NOT NULL,
                labels TEXT NOT NULL,
                created_at TEXT NOT NULL,
                lease_expires_at TEXT NOT NULL,
                state TEXT NOT NULL,
                last_error TEXT,
                work_directory TEXT NOT NULL,
                handle TEXT,
                idempotency_key TEXT,
                observed_host_key TEXT
            );
            """);
    }

    public string Path { get; }

    public IReadOnlyList<MachineRecord> All()
    {
        lock (_lock)
        {
            using var command = _connection.CreateCommand();
            command.CommandText = "SELECT id, type, template, manage, owner_uid, port, labels, created_at, lease_expires_at, state, last_error, work_directory, handle, idempotency_key, observed_host_key FROM machines ORDER BY created_at";
            using var reader = command.ExecuteReader();
            var records = new List<MachineRecord>();
            while (reader.Read())
            {
                records.Add(new MachineRecord(
                    reader.GetString(0),
                    reader.GetString(1),
                    reader.GetString(2),
                    reader.GetInt64(3) != 0,
                    reader.GetInt32(4),
                    reader.GetInt32(5),
                    JsonSerializer.Deserialize<Dictionary<string, string>>(reader.GetString(6)) ?? [],
                    DateTimeOffset.Parse(reader.GetString(7), CultureInfo.InvariantCulture),
                    DateTimeOffset.Parse(reader.GetString(8), CultureInfo.InvariantCulture),
                    reader.GetString(9),
                    reader.IsDBNull(10) ? null : reader.GetString(10),
                    reader.GetString(11),
                    reader.IsDBNull(12) ? null : reader.GetString(12),
                    reader.IsDBNull(13) ? null : reader.GetString(13),
                    reader.IsDBNull(14) ? null : reader.GetString(14)));
            }

            return records;
        }
    }

    /// <summary>
    /// Writes the machine's whole record, inserting or replacing it: one save per change, as the record is the
    /// unit a restarted daemon reads back.
    /// </summary>
    public void Save(MachineRecord record) => Execute(
        """
        INSERT INTO machines (id, type, template, manage, owner_uid, port, labels, created_at, lease_expires_at, state, last_error, work_directory, handle, idempotency_key, observed_host_key)
        VALUES ($id, $type, $template, $manage, $owner, $port, $labels, $created, $lease, $state, $error, $dir, $handle, $key, $hostkey)
        ON CONFLICT(id) DO UPDATE SET
            type = excluded.type, template = excluded.template, manage = excluded.manage, owner_uid = excluded.owner_uid,
            port = excluded.port, labels = excluded.labels, created_at = excluded.created_at,
            lease_expires_at = excluded.lease_expires_at, state = excluded.state, last_error = excluded.last_error,
            work_directory = excluded.work_directory, handle = excluded.handle, idempotency_key = excluded.idempotency_key,
            observed_host_key = excluded.observed_host_key
        """,
        ("$id", record.Id), ("$type", record.Type), ("$template", record.Template), ("$manage", record.Manage ? 1 : 0),
        ("$owner", record.OwnerUid), ("$port", record.Port), ("$labels", JsonSerializer.Serialize(record.Labels)),
        ("$created", record.CreatedAt.ToString("O", CultureInfo.InvariantCulture)),
        ("$lease", record.LeaseExpiresAt.ToString("O", CultureInfo.InvariantCulture)),
        ("$state", record.State), ("$error", record.LastError), ("$dir", record.WorkDirectory), ("$handle", record.Handle),
        ("$key", record.IdempotencyKey), ("$hostkey", record.ObservedHostKey));

    public void Delete(string id) => Execute("DELETE FROM machines WHERE id = $id", ("$id", id));

    public void Dispose()
    {
        lock (_lock)
        {
            _connection.Dispose();
        }
    }

    private void Execute(string sql, params (string Name, object? Value)[] parameters)
    {
        lock (_lock)
        {
            using var command = _connection.CreateCommand();
            command.CommandText = sql;
            foreach (var (name, value) in parameters)
            {
                command.Parameters.AddWithValue(name, value ?? DBNull.Value);
            }

            command.ExecuteNonQuery();
        }
    }
}
