"""The ledger's SQL, apart from the code that runs it: the migrations (the schema, versioned), the
columns in the order of :class:`~inventory.domain.allocation.Allocation`'s fields, and each statement.

``?`` placeholders and ``{money}``/``{time}``/``{bool}`` column types are the dialect's to fill in
(``inventory.ledger.sql``): one text for SQLite and PostgreSQL.
"""

from __future__ import annotations

#: (version, SQL). ``{money}``, ``{time}`` and ``{bool}`` are the dialect's column types; statements
#: are separated by ``;``. Never edit an applied migration: append the next version.
MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE allocations (
            "id" TEXT PRIMARY KEY,
            "namespace" TEXT NOT NULL,
            "pod" TEXT NOT NULL,
            "pod_uid" TEXT,
            "node" TEXT,
            "resource" TEXT NOT NULL,
            "count" INTEGER NOT NULL CHECK ("count" >= 0),
            "gpu_model" TEXT,
            "hourly_price" {money} NOT NULL,
            "status" TEXT NOT NULL
                CHECK ("status" IN ('reserved', 'active', 'released', 'expired', 'failed')),
            "start" {time} NOT NULL,
            "end" {time},
            "end_inferred" {bool} NOT NULL DEFAULT FALSE,
            "device_ids" TEXT NOT NULL DEFAULT '[]',
            "team" TEXT,
            "user" TEXT,
            "workload_type" TEXT,
            "expires_at" {time},
            "max_duration_hours" INTEGER,
            "cost_limit" {money},
            "message" TEXT
        );
        CREATE INDEX allocations_status ON allocations ("status");
        CREATE INDEX allocations_namespace ON allocations ("namespace");
        CREATE INDEX allocations_team ON allocations ("team");
        CREATE INDEX allocations_start ON allocations ("start");
        CREATE INDEX allocations_end ON allocations ("end")
        """,
    ),
    (
        2,
        # One open reservation per namespace and pod: a claim is matched by them, so a second one would
        # leave it to chance which is claimed. Older duplicates lapse first (the newest stays).
        """
        UPDATE allocations SET status = 'expired', "end" = COALESCE(expires_at, "start")
        WHERE status = 'reserved' AND pod <> '' AND EXISTS (
            SELECT 1 FROM allocations AS later
            WHERE later.status = 'reserved' AND later.namespace = allocations.namespace
                AND later.pod = allocations.pod
                AND (later."start" > allocations."start"
                    OR (later."start" = allocations."start" AND later.id > allocations.id))
        );
        CREATE UNIQUE INDEX allocations_one_reservation ON allocations ("namespace", "pod")
            WHERE status = 'reserved' AND pod <> ''
        """,
    ),
]

SCHEMA_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at {time})"
)

#: The columns of ``allocations`` in the order of :class:`Allocation`'s fields (a test keeps them equal).
COLUMNS = (
    "id", "namespace", "pod", "pod_uid", "node", "resource", "count", "gpu_model", "hourly_price", "status",
    "start", "end", "end_inferred", "device_ids", "team", "user", "workload_type", "expires_at",
    "max_duration_hours", "cost_limit", "message",
)  # fmt: skip
QUOTED = ", ".join(f'"{c}"' for c in COLUMNS)  # "start", "end", "user" are reserved words
SELECT = f"SELECT {QUOTED} FROM allocations"
OPEN = "('reserved', 'active')"
STATEMENTS = {
    "insert": f"INSERT INTO allocations ({QUOTED}) VALUES ({', '.join('?' for _ in COLUMNS)}) "
    "ON CONFLICT (id) DO NOTHING",
    "end": f'UPDATE allocations SET "end" = ?, end_inferred = ?, status = ? '
    f"WHERE id = ? AND status IN {OPEN}",
    "end_reserved": 'UPDATE allocations SET "end" = ?, end_inferred = ?, status = ? '
    "WHERE id = ? AND status = 'reserved'",
    # Any conflict, the id's or one open reservation per namespace and pod: nothing is written.
    "insert_reservation": f"INSERT INTO allocations ({QUOTED}) VALUES ({', '.join('?' for _ in COLUMNS)}) "
    "ON CONFLICT DO NOTHING",
    # Only the pod the reservation is for (its namespace, its pod when it names one, its resource).
    "claim": "UPDATE allocations SET status = 'active', pod_uid = ?, pod = ?, \"start\" = ? "
    "WHERE id = ? AND status = 'reserved' AND namespace = ? AND resource = ? AND (pod = '' OR pod = ?)",
    "get": f"{SELECT} WHERE id = ?",
    "open": f'{SELECT} WHERE status IN {OPEN} ORDER BY "start", id',
    "overlapping": f'{SELECT} WHERE "start" < ? AND ("end" IS NULL OR "end" > ?) '
    'AND ("start" > ? OR ("start" = ? AND id > ?)) ORDER BY "start", id LIMIT ?',
    "version": "SELECT MAX(version) FROM schema_version",
    "add_version": "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
}

#: Backup and restore (``inventory.ledger.backup``): the whole table read a batch at a time by id inside
#: one snapshot, and written back with a plain INSERT, so that a duplicate id fails the restore instead
#: of vanishing.
BACKUP_STATEMENTS = {
    "page_by_id": f"{SELECT} WHERE id > ? ORDER BY id LIMIT ?",
    "summary": f'SELECT COUNT(*), COUNT(CASE WHEN status IN {OPEN} THEN 1 END), MAX("start") '
    "FROM allocations",
    "delete_all": "DELETE FROM allocations",
    "restore": f"INSERT INTO allocations ({QUOTED}) VALUES ({', '.join('?' for _ in COLUMNS)})",
    # A SQLite backup file carries its header (counts, checksum) in a table of its own.
    "create_header": "CREATE TABLE kgm_backup (header TEXT NOT NULL)",
    "write_header": "INSERT INTO kgm_backup (header) VALUES (?)",
    "read_header": "SELECT header FROM kgm_backup",
}
