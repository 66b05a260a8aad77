"""The library's client for the daemon: discovery, auto-start, and one method per API call.

It is synchronous (``http.client`` over the Unix socket) so the CLI and scripts need no
event loop; async code calls it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote, urlencode

from recc.errors import DaemonUnavailable, RECCError, error_from_json
from recc.paths import daemon_log_path, data_dir, ensure_private_dir, log_dir, runtime_dir, socket_path

START_TIMEOUT = float(os.environ.get("RECC_DAEMON_START_TIMEOUT", "30"))


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def use_tcp() -> bool:
    """The TCP+token transport: asked for with ``RECC_TRANSPORT=tcp``, and the only one without AF_UNIX."""
    return os.environ.get("RECC_TRANSPORT", "unix" if hasattr(socket, "AF_UNIX") else "tcp") == "tcp"


def daemon_address() -> str:
    """``RECC_DAEMON`` (a socket path, ``unix://`` or ``http://127.0.0.1:PORT`` URL), else the well-known place."""
    value = os.environ.get("RECC_DAEMON")
    if value:
        return value.removeprefix("unix://")
    if use_tcp():
        try:
            return json.loads((runtime_dir() / "reccd.json").read_text())["url"]
        except (OSError, ValueError, KeyError):
            return str(runtime_dir() / "reccd.json")  # no daemon yet: name where its address will be
    return str(socket_path())


def daemon_token() -> str:
    """The TCP transport's token, from the file only the user can read."""
    try:
        return (runtime_dir() / "reccd.token").read_text().strip()
    except OSError:
        return ""


def live_row(row: dict[str, Any], now: float) -> dict[str, Any]:
    """A listing row with what moves on every second added for ``now``: ``age_seconds``, ``accrued_cost``
    (extrapolated from the row's ``accrual``) and the harvest's ``seconds_left`` (from its deadline).

    The daemon leaves them out of the listing so that its bytes, and so its ETag, change only when a
    cluster does: a poller is answered 304 and still shows a cost and an age that tick."""
    row["age_seconds"] = round((row.get("deleted_at") or now) - row["created_at"], 1)
    accrual = row.get("accrual") or {}
    cost = accrual.get("cost", 0.0)
    if accrual.get("at") is not None:
        cost += accrual.get("per_hour", 0.0) * max(0.0, now - accrual["at"]) / 3600.0
    row["accrued_cost"] = round(cost, 6)
    harvest = row.get("harvest")
    if harvest and harvest.get("deadline") is not None:
        harvest["seconds_left"] = max(0.0, harvest["deadline"] - now)
    return row


class DaemonClient:
    """One client per daemon address; cheap to create, one connection per request."""

    def __init__(self, address: str | None = None, timeout: float = 60.0) -> None:
        self._explicit = address
        self.timeout = timeout
        self._listings: dict[str, tuple[str, bytes]] = {}  # path -> (ETag, body) of the last listing

    @property
    def address(self) -> str:
        # looked up on every use: a TCP daemon's port is only known once it runs
        return self._explicit or daemon_address()

    def __repr__(self) -> str:
        return f"DaemonClient({self.address!r})"

    def _unavailable(self) -> DaemonUnavailable:
        return DaemonUnavailable(f"No RECC daemon at {self.address}.",
                                 hint="start it with `reccd` or `recc daemon start`, or run `recc doctor`")

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        address = self.address
        if address.startswith("http://"):
            host, _, port = address.removeprefix("http://").rstrip("/").rpartition(":")
            if not port.isdigit():
                raise self._unavailable()
            return http.client.HTTPConnection(host, int(port), timeout=timeout)
        return _UnixHTTPConnection(address, timeout)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {daemon_token()}"} if self.address.startswith("http://") else {}

    def request(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        return self._exchange(method, path, body, timeout)[1]

    def _exchange(self, method: str, path: str, body: Any = None, timeout: float | None = None,
                  extra: dict[str, str] | None = None) -> tuple[http.client.HTTPResponse, Any, bytes]:
        """One request: the response (status, headers), its decoded JSON and its raw bytes; errors raised."""
        conn = self._connection(timeout or self.timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, path, body=payload, headers={**headers, **self._headers(), **(extra or {})})
            response = conn.getresponse()
            raw = response.read()
        except (FileNotFoundError, ConnectionError):
            # refused, reset or closed mid-answer: no daemon (or one that is stopping)
            raise self._unavailable() from None
        except (socket.timeout, TimeoutError):
            raise DaemonUnavailable(f"the RECC daemon at {self.address} did not answer {method} {path} in time",
                                    hint=f"see its log at {daemon_log_path()}") from None
        finally:
            conn.close()
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            raise RECCError(f"the daemon sent a malformed answer to {method} {path}") from None
        if response.status >= 400:
            raise error_from_json(data)
        return response, data, raw

    # -- discovery and start ------------------------------------------------------------

    def health(self, timeout: float = 5.0) -> dict[str, Any]:
        info = self.request("GET", "/v1/health", timeout=timeout)
        if info.get("uid") not in (None, getattr(os, "getuid", lambda: None)()):
            raise DaemonUnavailable(f"the daemon at {self.address} belongs to another user")
        return info

    def is_alive(self) -> bool:
        try:
            self.health()
            return True
        except DaemonUnavailable:
            return False

    @classmethod
    def connect(cls, start: bool = True, address: str | None = None, quiet: bool = False) -> "DaemonClient":
        """A client for a daemon that answers, starting one if allowed and none runs."""
        client = cls(address)
        try:
            client.health()
            return client
        except DaemonUnavailable:
            if not start:
                raise
        job = os.environ.get("RECC_JOB_ID")
        if job and address is None and not os.environ.get("RECC_DAEMON"):
            return cls.start_job_daemon(job, quiet=quiet)
        client.start_daemon(quiet=quiet)
        return client

    @classmethod
    def start_job_daemon(cls, job: str, quiet: bool = False) -> "DaemonClient":
        """A private daemon for this job's process: its own folders, no per-user lock.

        It deletes the job's clusters and exits when this process ends, however it ends.
        Later calls in this process (and its children) find it through ``RECC_DAEMON``.
        """
        pid = os.getpid()
        runtime = ensure_private_dir(runtime_dir()) / f"job-{pid}"
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in job)[:40]
        data = ensure_private_dir(data_dir()) / "jobs" / f"{safe}-{pid}"
        client = cls(str(runtime / "reccd.sock"))
        env = {**os.environ, "RECC_RUNTIME_DIR": str(runtime), "RECC_DATA_DIR": str(data)}
        client.start_daemon(quiet=quiet, env=env, args=["--job-parent", str(pid)])
        os.environ["RECC_DAEMON"] = client.address
        return client

    def start_daemon(self, quiet: bool = False, env: dict[str, str] | None = None,
                     args: list[str] | None = None) -> None:
        """Spawn ``python -m reccd`` in its own session and wait until it answers."""
        if env is None and os.environ.get("RECC_DAEMON"):
            raise self._unavailable()  # an explicit address: a daemon started here would not listen there
        out = open(os.open(ensure_private_dir(log_dir()) / "reccd.stdout", os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                           0o600), "ab")
        try:
            proc = subprocess.Popen([sys.executable, "-m", "reccd", *(args or [])], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                                    env=env)
        finally:
            out.close()
        if not quiet:
            print("Starting the RECC daemon...", file=sys.stderr, flush=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.is_alive():
                # the daemon is our child until we exit: reap it when it stops, or it stays a zombie that
                # looks alive to anything checking its pid (`recc daemon stop`, benches, the TUI)
                threading.Thread(target=proc.wait, name="reccd-reaper", daemon=True).start()
                return
            if proc.poll() is not None and not self.is_alive():
                tail = _tail(log_dir() / "reccd.stdout", 5)
                raise DaemonUnavailable(f"the RECC daemon exited at start: {tail or 'no output'}",
                                        hint=f"see {daemon_log_path()}")
            time.sleep(0.1)
        raise DaemonUnavailable(f"the RECC daemon did not answer within {START_TIMEOUT:.0f}s",
                                hint=f"see {daemon_log_path()}")

    # -- API ------------------------------------------------------------------------------

    def list_clusters(self, include_gone: bool = False) -> list[dict[str, Any]]:
        """The clusters (fresh dicts on every call), with their ages, accrued costs and harvest countdowns
        as of now (`live_row`). A client that polls sends the ETag of the listing it last got, and an
        unchanged listing comes back as a 304 without its body (cheap for the daemon)."""
        path = "/v1/clusters" + ("?all=1" if include_gone else "")
        cached = self._listings.get(path)
        extra = {"If-None-Match": cached[0]} if cached else {}
        response, data, raw = self._exchange("GET", path, extra=extra)
        if response.status == 304 and cached:
            data = json.loads(cached[1])  # parsed again: callers may change what they get
        else:
            etag = response.getheader("ETag")
            if etag:
                self._listings[path] = (etag, raw)
        now = time.time()
        return [live_row(row, now) for row in data["clusters"]]

    def create_cluster(self, spec: dict[str, Any], name: str | None = None,
                       confirm_cost: bool = False) -> dict[str, Any]:
        return self.request("POST", "/v1/clusters", {"spec": spec, "name": name, "confirm_cost": confirm_cost})

    def extend(self, name: str, minutes: float = 30) -> dict[str, Any]:
        return self.request("POST", f"/v1/clusters/{quote(name, safe='')}/extend", {"minutes": minutes})

    def costs(self, by: str = "cluster") -> list[dict[str, Any]]:
        return self.request("GET", f"/v1/costs?{urlencode({'by': by})}")["costs"]

    def exact_costs(self, by: str = "cluster", days: float = 31.0) -> dict[str, Any]:
        """EKS spend from AWS's instance times per context (``GET /v1/costs?exact=1``): several AWS calls,
        so a longer timeout than the daemon's own answers."""
        return self.request("GET", f"/v1/costs?{urlencode({'by': by, 'exact': 1, 'days': f'{days:g}'})}",
                            timeout=90.0)

    def get_cluster(self, name: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/clusters/{quote(name, safe='')}")

    def delete_cluster(self, name: str, reason: str | None = None, by: str | None = None) -> dict[str, Any]:
        body = {k: v for k, v in (("reason", reason), ("by", by)) if v is not None}
        return self.request("DELETE", f"/v1/clusters/{quote(name, safe='')}", body or None, timeout=300)

    def scale(self, name: str, n_workers: int) -> dict[str, Any]:
        return self.request("POST", f"/v1/clusters/{quote(name, safe='')}/scale", {"n_workers": n_workers},
                            timeout=600)

    def connection(self, name: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/clusters/{quote(name, safe='')}/connection")

    def logs(self, name: str, tail: int | None = None) -> dict[str, list[str]]:
        query = f"?{urlencode({'tail': tail})}" if tail is not None else ""
        return self.request("GET", f"/v1/clusters/{quote(name, safe='')}/logs{query}")["logs"]

    def logs_page(self, name: str, tail: int | None = None, since_seconds: int | None = None,
                  timestamps: bool = False) -> dict[str, Any]:
        """``{"logs": {component: lines}, "timestamps": bool}``; where the provider can (EKS), only the
        last ``since_seconds`` and each line prefixed by its RFC 3339 time (see `recc.logfollow`)."""
        params: dict[str, Any] = {k: v for k, v in (("tail", tail), ("since_seconds", since_seconds)) if v}
        if timestamps:
            params["timestamps"] = "true"
        query = f"?{urlencode(params)}" if params else ""
        return self.request("GET", f"/v1/clusters/{quote(name, safe='')}/logs{query}")

    def shutdown(self) -> None:
        self.request("POST", "/v1/shutdown")

    def credentials(self, check: bool = True) -> dict[str, Any]:
        """The daemon's AWS identity, session expiry and state (``check``: ask AWS if it has no session yet)."""
        return self.request("GET", "/v1/credentials" + ("" if check else "?check=0"))

    def reload_credentials(self) -> dict[str, Any]:
        """Tell the daemon that `recc login` / `logout` changed the login: it forgets its sessions."""
        return self.request("POST", "/v1/credentials/reload")

    def events(self, cluster: str | None = None, timeout: float | None = None) -> "EventStream":
        """Follow the daemon's event stream (one dict per event) until it ends or is closed."""
        conn = self._connection(timeout)
        try:
            conn.request("GET", "/v1/events" + (f"?{urlencode({'cluster': cluster})}" if cluster else ""),
                         headers=self._headers())
            response = conn.getresponse()
        except (FileNotFoundError, ConnectionError):
            conn.close()
            raise self._unavailable() from None
        return EventStream(conn, response)


class EventStream:
    """An iterator over daemon events; ``close()`` from any thread ends it."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        self._conn = conn
        self._response = response

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            for line in self._response:
                if line.strip():
                    yield json.loads(line)
        except Exception:  # noqa: BLE001 - closed (from another thread) or the daemon went away: the stream ends
            return
        finally:
            self.close()

    def close(self) -> None:
        sock = self._conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked in another thread
            except OSError:
                pass
        self._conn.close()


def _tail(path: Path, n: int) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-n:])
    except OSError:
        return ""
