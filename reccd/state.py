"""The daemon's state in SQLite: clusters, the provisioning journal and events.

All access goes through one worker thread (`State.run`), so SQLite's blocking calls
never run on the event loop and statements never interleave.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

from recc.spec import ClusterStatus

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS clusters (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    provider TEXT NOT NULL,
    template TEXT NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    target_workers INTEGER NOT NULL,
    checkpoint TEXT,
    tls TEXT,
    dashboard_token TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    deleted_at REAL
);
-- a name is taken only while a cluster of that name is live
CREATE UNIQUE INDEX IF NOT EXISTS clusters_live_name ON clusters(name)
    WHERE status NOT IN ('deleted', 'failed');
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    cluster_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    phase TEXT NOT NULL,          -- 'intent' before a side effect, 'done' after it
    checkpoint TEXT,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS node_samples (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    cluster_id TEXT NOT NULL,
    at REAL NOT NULL,
    nodes INTEGER NOT NULL,
    price_per_node_hour REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    month TEXT NOT NULL,
    threshold INTEGER NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (scope, name, month, threshold)
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    cluster_id TEXT,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT,
    at REAL NOT NULL
);
"""

# Columns added after the first release: added to an existing database on open.
LATER_COLUMNS = {
    "persist": "INTEGER NOT NULL DEFAULT 0",
    "job_id": "TEXT",
    "owner": "TEXT",
    "extended_until": "REAL",
    "warned_at": "REAL",
    "deleted_by": "TEXT",
    "deleted_reason": "TEXT",
    "logs_tail": "TEXT",
    "total_cost": "REAL",
    "corrupt": "TEXT",
}

NETWORK_FILESYSTEMS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "fuse.sshfs", "afs", "lustre", "gpfs"}

LIVE = tuple(s.value for s in ClusterStatus if s.is_live)


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem holding ``path`` (Linux /proc/mounts), or None if unknown."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    target = str(path.resolve())
    best, best_type = "", None
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3:
            mount = parts[1].replace("\\040", " ")
            if (target == mount or target.startswith(mount.rstrip("/") + "/")) and len(mount) > len(best):
                best, best_type = mount, parts[2]
    return best_type


class State:
    """SQLite-backed state. Every public coroutine runs its statement on the state thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recc-state")
        self._db: sqlite3.Connection | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)  # never readable by others
        os.close(fd)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        # WAL needs shared memory that network filesystems do not provide reliably.
        mode = "DELETE" if filesystem_type(self.path) in NETWORK_FILESYSTEMS else "WAL"
        db.execute(f"PRAGMA journal_mode={mode}")
        db.execute("PRAGMA synchronous=NORMAL" if mode == "WAL" else "PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(SCHEMA)
        have = {r["name"] for r in db.execute("PRAGMA table_info(clusters)")}
        for column, decl in LATER_COLUMNS.items():
            if column not in have:
                db.execute(f"ALTER TABLE clusters ADD COLUMN {column} {decl}")
        # Listings leave out the key material: only `connection` needs it, through `find_live`. Decoding
        # 100 rows' certificates took ~1.3 ms of the ~3.7 ms the keep-alive's listing held the GIL each second,
        # stalling every API request in flight meanwhile.
        listed = [r["name"] for r in db.execute("PRAGMA table_info(clusters)") if r["name"] != "tls"]
        self._listed_columns = ", ".join(listed)
        self._db = db

    async def open(self) -> None:
        await self.run(self._open)

    async def close(self) -> None:
        if self._db is not None:
            await self.run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    # -- clusters ---------------------------------------------------------------------

    @staticmethod
    def _row(row: sqlite3.Row | None) -> dict[str, Any] | None:
        if row is None:
            return None
        d = dict(row)
        for key in ("spec", "checkpoint", "tls", "logs_tail"):
            if d.get(key) is not None:
                try:
                    d[key] = json.loads(d[key])
                except ValueError:
                    # a damaged row must not stop the daemon: report it, keep what is readable
                    d[key] = None
                    d["corrupt"] = f"{d.get('corrupt') or ''} {key}".strip()
        return d

    def _insert_cluster(self, name: str, spec: dict[str, Any], tls: dict[str, str], token: str,
                        owner: str) -> dict[str, Any]:
        assert self._db is not None
        now = time.time()
        cid = uuid.uuid4().hex[:12]
        self._db.execute(
            "INSERT INTO clusters (id, name, provider, template, spec, status, target_workers, tls,"
            " dashboard_token, created_at, updated_at, persist, job_id, owner) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (cid, name, spec["provider"], spec["template"], json.dumps(spec), ClusterStatus.PENDING.value,
             spec["n_workers"], json.dumps(tls), token, now, now, int(bool(spec.get("persist"))),
             spec.get("job_id"), owner),
        )
        return self._get(cid)  # type: ignore[return-value]

    async def insert_cluster(self, name: str, spec: dict[str, Any], tls: dict[str, str], token: str,
                             owner: str) -> dict[str, Any]:
        """Insert a new pending cluster; raises sqlite3.IntegrityError if the name is live."""
        return await self.run(self._insert_cluster, name, spec, tls, token, owner)

    def _get(self, cid: str) -> dict[str, Any] | None:
        assert self._db is not None
        return self._row(self._db.execute("SELECT * FROM clusters WHERE id=?", (cid,)).fetchone())

    async def get(self, cid: str) -> dict[str, Any] | None:
        return await self.run(self._get, cid)

    def _find(self, name: str) -> dict[str, Any] | None:
        assert self._db is not None
        row = self._db.execute(
            f"SELECT * FROM clusters WHERE (name=? OR id=?) AND status IN ({','.join('?' * len(LIVE))})"
            " ORDER BY created_at DESC LIMIT 1", (name, name, *LIVE)).fetchone()
        return self._row(row)

    async def find_live(self, name: str) -> dict[str, Any] | None:
        """The live cluster with this name (or id), if any."""
        return await self.run(self._find, name)

    def _list(self, include_gone: bool) -> list[dict[str, Any]]:
        assert self._db is not None
        if include_gone:
            rows = self._db.execute(f"SELECT {self._listed_columns} FROM clusters ORDER BY created_at").fetchall()
        else:
            rows = self._db.execute(
                f"SELECT {self._listed_columns} FROM clusters WHERE status IN ({','.join('?' * len(LIVE))})"
                " ORDER BY created_at", LIVE).fetchall()
        return [self._row(r) for r in rows]  # type: ignore[misc]

    async def list(self, include_gone: bool = False) -> list[dict[str, Any]]:
        """The live clusters (with ``include_gone``, all), oldest first; rows without ``tls`` (see `_open`)."""
        return await self.run(self._list, include_gone)

    def _update(self, cid: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        assert self._db is not None
        fields = dict(fields, updated_at=time.time())
        for key in ("spec", "checkpoint", "tls", "logs_tail"):
            if key in fields and fields[key] is not None:
                fields[key] = json.dumps(fields[key])
        sets = ", ".join(f"{k}=?" for k in fields)
        self._db.execute(f"UPDATE clusters SET {sets} WHERE id=?", (*fields.values(), cid))
        return self._get(cid)

    async def update(self, cid: str, **fields: Any) -> dict[str, Any] | None:
        return await self.run(self._update, cid, fields)

    # -- journal and events -------------------------------------------------------------

    def _journal(self, cid: str, step: int, phase: str, checkpoint: dict[str, Any] | None) -> None:
        assert self._db is not None
        self._db.execute(
            "INSERT INTO journal (cluster_id, step, phase, checkpoint, at) VALUES (?,?,?,?,?)",
            (cid, step, phase, json.dumps(checkpoint) if checkpoint is not None else None, time.time()))

    async def journal(self, cid: str, step: int, phase: str, checkpoint: dict[str, Any] | None = None) -> None:
        """Record a provisioning step's intent (before) or outcome (after its side effect)."""
        await self.run(self._journal, cid, step, phase, checkpoint)

    def _add_event(self, cid: str | None, kind: str, message: str, data: dict[str, Any] | None) -> int:
        assert self._db is not None
        cur = self._db.execute(
            "INSERT INTO events (cluster_id, kind, message, data, at) VALUES (?,?,?,?,?)",
            (cid, kind, message, json.dumps(data or {}), time.time()))
        return int(cur.lastrowid or 0)

    async def add_event(self, cid: str | None, kind: str, message: str, data: dict[str, Any] | None = None) -> int:
        return await self.run(self._add_event, cid, kind, message, data)

    def _events(self, cid: str) -> list[dict[str, Any]]:
        assert self._db is not None
        rows = self._db.execute("SELECT * FROM events WHERE cluster_id=? ORDER BY seq", (cid,)).fetchall()
        return [dict(r, data=json.loads(r["data"] or "{}")) for r in rows]

    async def events(self, cid: str) -> list[dict[str, Any]]:
        return await self.run(self._events, cid)

    def _last_done(self, cid: str) -> tuple[dict[str, Any] | None, bool]:
        """The last journaled checkpoint of a cluster, and whether a corrupt row was skipped."""
        assert self._db is not None
        corrupt = False
        for row in self._db.execute("SELECT checkpoint FROM journal WHERE cluster_id=? AND phase IN ('done','complete','scaled')"
                                    " AND checkpoint IS NOT NULL ORDER BY seq DESC", (cid,)):
            try:
                return json.loads(row["checkpoint"]), corrupt
            except ValueError:
                corrupt = True
        return None, corrupt

    async def last_done(self, cid: str) -> tuple[dict[str, Any] | None, bool]:
        return await self.run(self._last_done, cid)

    # -- costs ------------------------------------------------------------------------

    def _add_sample(self, cid: str, nodes: int, price: float, at: float | None) -> None:
        assert self._db is not None
        self._db.execute("INSERT INTO node_samples (cluster_id, at, nodes, price_per_node_hour) VALUES (?,?,?,?)",
                         (cid, time.time() if at is None else at, nodes, price))

    async def add_sample(self, cid: str, nodes: int, price: float, at: float | None = None) -> None:
        """Record that a cluster runs ``nodes`` nodes from now (or ``at``) on."""
        await self.run(self._add_sample, cid, nodes, price, at)

    def _samples(self) -> dict[str, list[tuple[float, int, float]]]:
        assert self._db is not None
        out: dict[str, list[tuple[float, int, float]]] = {}
        for r in self._db.execute("SELECT cluster_id, at, nodes, price_per_node_hour FROM node_samples ORDER BY seq"):
            out.setdefault(r["cluster_id"], []).append((r["at"], r["nodes"], r["price_per_node_hour"]))
        return out

    async def samples(self) -> dict[str, list[tuple[float, int, float]]]:
        return await self.run(self._samples)

    def _record_alert(self, scope: str, name: str, month: str, threshold: int) -> bool:
        assert self._db is not None
        cur = self._db.execute("INSERT OR IGNORE INTO alerts (scope, name, month, threshold, at) VALUES (?,?,?,?,?)",
                               (scope, name, month, threshold, time.time()))
        return cur.rowcount == 1

    async def record_alert(self, scope: str, name: str, month: str, threshold: int) -> bool:
        """True the first time this threshold is crossed this month (so each alert goes out once)."""
        return await self.run(self._record_alert, scope, name, month, threshold)

    def _gone_by_name(self, name: str) -> dict[str, Any] | None:
        assert self._db is not None
        return self._row(self._db.execute(
            f"SELECT * FROM clusters WHERE (name=? OR id=?) AND status NOT IN ({','.join('?' * len(LIVE))})"
            " ORDER BY created_at DESC LIMIT 1", (name, name, *LIVE)).fetchone())

    async def gone_by_name(self, name: str) -> dict[str, Any] | None:
        """The most recent deleted or failed cluster of that name (its tombstone)."""
        return await self.run(self._gone_by_name, name)
