"""API fuzzing: schemathesis, driven by the daemon's own OpenAPI document, against a live daemon.

The daemon runs with the TCP+token transport (schemathesis speaks HTTP over TCP; the token goes in
every request's header). Every operation gets ``RECC_FUZZ_EXAMPLES`` generated requests (default 25,
seeded, so CI runs the same cases every time). Run longer with, for example::

    RECC_FUZZ_EXAMPLES=2000 RECC_FUZZ_SEED=$RANDOM .venv/bin/python -m pytest tests/test_fuzz_api.py

Left out: ``POST /v1/shutdown`` (it stops the daemon, by design) and ``GET /v1/events`` (a stream
that never ends; the raw fuzzer in ``test_fuzz_raw.py`` covers it). Creation requests get an
impossible worker size, so they exercise all of a spec's parsing and validation but never start
processes (the load test creates real clusters).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator, NamedTuple

import psutil
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import seed as hypothesis_seed
from schemathesis.checks import not_a_server_error

from reccd.openapi import OPENAPI
from tests.harness import Daemon, make_dirs

EXAMPLES = int(os.environ.get("RECC_FUZZ_EXAMPLES", "25"))
SEED = int(os.environ.get("RECC_FUZZ_SEED", "20260901"))
SCHEMA = schemathesis.openapi.from_dict(OPENAPI).exclude(path="/v1/shutdown").exclude(path="/v1/events")


class Api(NamedTuple):
    url: str
    headers: dict[str, str]
    daemon: Daemon


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    daemon = Daemon(make_dirs())
    daemon.env["RECC_TRANSPORT"] = "tcp"
    daemon.start(wait=False)
    runtime = Path(daemon.dirs["RECC_RUNTIME_DIR"])
    try:
        import time

        deadline = time.monotonic() + 30
        while not (runtime / "reccd.json").exists() or not (runtime / "reccd.token").exists():
            assert time.monotonic() < deadline and daemon.proc.poll() is None, daemon.log
            time.sleep(0.05)
        url = json.loads((runtime / "reccd.json").read_text())["url"]
        token = (runtime / "reccd.token").read_text()
        yield Api(url, {"Authorization": f"Bearer {token}"}, daemon)
        # After every operation's cases: still alive, and its memory stayed small.
        assert daemon.proc.poll() is None, daemon.log
        assert psutil.Process(daemon.proc.pid).memory_info().rss < 400 * 2**20
        assert "Traceback" not in daemon.log and "unhandled error" not in daemon.log, daemon.log[-3000:]
    finally:
        daemon.cleanup()


@SCHEMA.parametrize()
@hypothesis_seed(SEED)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_generated_requests_get_answers_never_500s(case: schemathesis.Case, api: Api) -> None:
    if case.method == "POST" and case.path == "/v1/clusters" and isinstance(case.body, dict) \
            and isinstance(case.body.get("spec"), dict):
        case.body["spec"]["worker_memory"] = 2**60  # refused as an impossible plan: nothing is started
    response = case.call(base_url=api.url, headers=api.headers, timeout=15)
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code == 304:  # a generated If-None-Match that matched: no body, by definition
        assert case.method == "GET" and response.content == b""
        return
    ctype = {k.lower(): v for k, v in response.headers.items()}["content-type"]
    assert "application/json" in str(ctype), ctype
    body = response.json()
    if response.status_code >= 400:  # every error is the API's JSON error with a code
        assert isinstance(body["error"]["code"], str) and body["error"]["message"], body
    assert response.status_code not in (401, 403)  # the token was accepted throughout
    # Nothing a fuzzer sends starts a cluster.
    listed = requests.get(f"{api.url}/v1/clusters", headers=api.headers, timeout=15)
    assert listed.status_code == 200 and listed.json() == {"clusters": []}
