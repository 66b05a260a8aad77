"""A fake Kubernetes API server for RECC's EKS tests (test code: it never ships).

It speaks the real REST API to the official ``kubernetes`` Python client over plain HTTP on
127.0.0.1, checks EKS bearer tokens, turns the instances of RECC's Auto Scaling groups in moto
into Nodes, schedules pods onto Nodes that fit, and runs each pod's command as a local process.
See README.md in this folder for what it supports and how a test uses it.

    from tests.fakekube import FakeKube, make_token
    fake = FakeKube(cluster_name="research", moto_endpoint=moto_url)
    url = fake.start_in_thread()      # or: await fake.start(); or python -m tests.fakekube --port 0
"""

from tests.fakekube.auth import TokenVerifier, make_token
from tests.fakekube.clock import Clock
from tests.fakekube.process import FakeKubeProcess
from tests.fakekube.server import FakeKube

__all__ = ["Clock", "FakeKube", "FakeKubeProcess", "TokenVerifier", "make_token"]
