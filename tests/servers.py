"""Servers the tests share: moto in server mode, and moto with the fake Kubernetes API beside it."""

from __future__ import annotations

import logging
import urllib.request
from contextlib import contextmanager
from typing import Iterator

from moto.server import ThreadedMotoServer

from tests.fakekube import FakeKube


@contextmanager
def moto_server() -> Iterator[str]:
    """moto on 127.0.0.1 (a free port); yields its URL for AWS_ENDPOINT_URL / endpoint_url."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        yield url
    finally:
        # moto's backends are per process, not per server: another module's server on this
        # xdist worker would otherwise see this module's groups and templates.
        try:
            urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10).close()
        finally:
            server.stop()


@contextmanager
def moto_and_kube(cluster: str, region: str) -> Iterator[tuple[str, FakeKube, str]]:
    """moto plus a fake Kubernetes API that turns its RECC instances into Nodes: (moto URL, fake, fake URL)."""
    with moto_server() as moto_url:
        fake = FakeKube(cluster_name=cluster, moto_endpoint=moto_url, region=region, node_poll_interval=0.25,
                        known_secrets={"testing": "testing"}, max_grace=2.0)
        url = fake.start_in_thread()
        try:
            yield moto_url, fake, url
        finally:
            fake.stop_in_thread()
