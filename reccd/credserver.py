"""The AWS container-credentials endpoint for the user's own processes, and the daemon's
``/v1/credentials`` API routes.

The endpoint is what ECS and EKS Pod Identity give a container: boto3, s3fs and every AWS
SDK read ``AWS_CONTAINER_CREDENTIALS_FULL_URI`` (here ``http://127.0.0.1:<port>/aws-credentials``;
botocore accepts http only on loopback) and send the contents of
``AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`` as the ``Authorization`` header on every fetch
(facts.md section 8). The token file is 0600 in the private runtime folder and has no
trailing newline (botocore refuses a header with one). Others on the machine can reach the
port but not the token; the answer is a short-lived session, never the long-lived key.

The port is kept across restarts when it is free again, so shells that ran ``recc env``
keep working after the daemon restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
from pathlib import Path
from typing import Any

from aiohttp import web

from recc.errors import RECCError
from recc.paths import write_private_file
from reccd.credentials import DaemonCredentials

log = logging.getLogger("reccd.credserver")

PATH = "/aws-credentials"
TOKEN_FILE = "aws-credentials.token"
PORT_FILE = "aws-credentials.port"


def endpoint_app(creds: DaemonCredentials, token: str) -> web.Application:
    """The endpoint: GET with the token -> ``{AccessKeyId, SecretAccessKey, Token, Expiration, AccountId}``."""

    async def credentials(request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            return web.json_response({"code": "unauthorized", "message": "a valid RECC credentials token is required"},
                                     status=401)
        try:
            issued = await asyncio.to_thread(creds.current)
        except RECCError as exc:
            # botocore retries non-200 answers and then reports a generic error; the message is for logs/curl
            return web.json_response({"code": exc.code, "message": exc.message, "hint": exc.hint}, status=503)
        body: dict[str, Any] = {"AccessKeyId": issued.access_key, "SecretAccessKey": issued.secret_key,
                                "Token": issued.token, "Expiration": issued.expiration_iso()}
        if creds.identity:
            body["AccountId"] = creds.identity.get("account")
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    app = web.Application()
    app.router.add_get(PATH, credentials)
    return app


class CredentialsEndpoint:
    """The running endpoint: its URL, its token file, and how to stop it."""

    def __init__(self, creds: DaemonCredentials, runtime: Path, data: Path) -> None:
        self.creds, self.runtime, self.data = creds, runtime, data
        self.token_file = runtime / TOKEN_FILE
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        token = secrets.token_urlsafe(32)
        write_private_file(self.token_file, token)  # no newline: it is sent as a header verbatim
        self._runner = web.AppRunner(endpoint_app(self.creds, token), access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        port_file = self.data / PORT_FILE
        try:
            wanted = int(port_file.read_text())
        except (OSError, ValueError):
            wanted = 0
        try:
            site = web.TCPSite(self._runner, "127.0.0.1", wanted)
            await site.start()
        except OSError:  # the old port is taken: any free one
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        write_private_file(port_file, str(port))
        self.url = f"http://127.0.0.1:{port}{PATH}"
        log.info("AWS credentials endpoint at %s", self.url)

    def info(self) -> dict[str, str]:
        return {"url": self.url, "token_file": str(self.token_file)}

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        with contextlib.suppress(FileNotFoundError):
            self.token_file.unlink()


def credential_routes(creds: DaemonCredentials, endpoint: CredentialsEndpoint) -> web.RouteTableDef:
    """``GET /v1/credentials`` (status, checking with AWS if needed) and ``POST /v1/credentials/reload``."""
    routes = web.RouteTableDef()

    @routes.get("/v1/credentials")
    async def status(request: web.Request) -> web.Response:
        check = request.query.get("check", "1") not in ("0", "false", "no")
        out = await asyncio.to_thread(creds.check if check else creds.status)
        return web.json_response(dict(out, endpoint=endpoint.info()))

    @routes.post("/v1/credentials/reload")
    async def reload(request: web.Request) -> web.Response:
        await asyncio.to_thread(creds.reload)
        return web.json_response(dict(creds.status(), endpoint=endpoint.info()))

    return routes


async def refresh_loop(creds: DaemonCredentials, interval: float = 60.0) -> None:
    """Refresh a held session before it runs low, so no caller waits for STS (and expiry is noticed early)."""
    while True:
        await asyncio.sleep(interval)
        if creds.status().get("expires_at") is not None:
            with contextlib.suppress(RECCError):
                await asyncio.to_thread(creds.current)
