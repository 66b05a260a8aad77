"""AWS and Kubernetes API calls, and orchestration time, of the eks provider for 3 and 300 workers.

Not a test: run ``python bench/eks_calls.py`` (or ``python -m bench``). moto (server mode) stands
in for AWS and ``tests/fakekube`` for Kubernetes, with ``run_processes=False``: bound pods are
marked Running without starting 300 Dask processes, so the scheduler never answers and the
provider's "ready" step (which asks the scheduler for its workers) cannot finish. What is measured,
per worker count, with the provider driven directly (`EksProvider.calls` counts every AWS and
Kubernetes request, retries included):

Each provider is warmed first (AssumeRole session, boto3 clients, Kubernetes client, first token: once
per daemon and context, not per cluster).

- ``create``: create steps 1-5 (namespace and policy objects, the Auto Scaling group and its launch
  template, the TLS secret, both Deployments, the Service): pure orchestration, no waiting;
- ``progress``: one progress round of the ready step (group instances, nodes, pods and why they
  are Pending) once every worker pod is placed, plus one `status()` (what the daemon's observation
  loop asks every few seconds); node boot (moto instances becoming Nodes) happens before, untimed;
- ``delete``: the whole delete (Service and Deployments, waiting until their pods are gone, the
  group and template, waiting until its instances are terminated, the namespace and waiting until
  it is gone). Its waits poll every 0.25 s, so its call count depends a little on timing.

The figure that matters: calls must not grow with the worker count (list calls return all pods in
one answer; nothing is asked per pod or per node).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLUSTER, REGION = "bench-eks", "us-east-1"


def _env(moto_url: str) -> None:
    os.environ.update(AWS_ENDPOINT_URL=moto_url, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION=REGION)
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(var, None)


async def _measure(provider: Any, name: str, spec: Any, fake: Any) -> dict[str, Any]:
    from reccd.tls import make_cluster_tls

    out: dict[str, Any] = {}
    names = provider._names(name, spec)

    def warm() -> None:  # the session (AssumeRole), clients and the first token: once per daemon, not timed
        provider.api()
        provider.bearer()
        for service in ("autoscaling", "ec2"):
            provider.client(service)

    await asyncio.to_thread(warm)

    def phase(key: str, started: float, before: dict[str, int]) -> None:
        out[key] = {"seconds": round(time.perf_counter() - started, 3),
                    "aws": provider.calls["aws"] - before["aws"], "k8s": provider.calls["k8s"] - before["k8s"]}

    before, started = dict(provider.calls), time.perf_counter()
    last = None
    steps = provider.create(name, spec, make_cluster_tls(name))
    async for cp in steps:
        last = cp
        if cp.get("service"):
            break
    await steps.aclose()
    phase("create", started, before)

    # node boot and pod placement: not orchestration, not timed (wait until every worker pod is bound)
    deadline = time.monotonic() + 300
    while True:
        fake.sync_nodes()
        pods = await provider.k8s("core", "list_namespaced_pod", names.namespace)
        running = sum(1 for p in pods.items if p.status.phase == "Running")
        if running >= spec.n_workers + 1 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    out["pods_running"] = running

    before, started = dict(provider.calls), time.perf_counter()
    prog = await provider._progress(names, last)
    [status] = await provider.status([name], [last])
    phase("progress", started, before)
    out["progress"].update(instances=prog["instances"], nodes=prog["nodes"],
                           workers_running=prog["workers_running"], workers_ready=status.workers_ready)

    before, started = dict(provider.calls), time.perf_counter()
    await provider.delete(name, last)
    phase("delete", started, before)
    out["total"] = {k: sum(out[p][k] for p in ("create", "progress", "delete")) for k in ("aws", "k8s")}
    out["total"]["seconds"] = round(sum(out[p]["seconds"] for p in ("create", "progress", "delete")), 3)
    return out


def run(worker_counts: list[int]) -> dict[int, dict[str, Any]]:
    sys.path.insert(0, str(ROOT))
    import logging

    from moto.server import ThreadedMotoServer

    from tests.eks_env import setup_aws
    from tests.fakekube import FakeKube
    from recc.plan import plan
    from recc.templates import resolve
    from reccd.contexts import Context
    from reccd.providers.eks import EksProvider

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    moto_url = "http://%s:%d" % moto.get_host_and_port()
    _env(moto_url)
    fake = FakeKube(cluster_name=CLUSTER, moto_endpoint=moto_url, region=REGION, node_poll_interval=0.25,
                    known_secrets={"testing": "testing"}, run_processes=False, max_grace=1.0)
    url = fake.start_in_thread()
    results: dict[int, dict[str, Any]] = {}
    try:
        role_arn, template = setup_aws(moto_url)
        for n in worker_counts:
            spec = resolve("small-cluster-small-workers", n_workers=n)
            ctx = Context(name="bench", region=REGION, eks_cluster=CLUSTER, kubernetes_api_url=url,
                          provisioner_role_arn=role_arn, launch_template_name=template,
                          availability_zones=(f"{REGION}a",), max_nodes=200, capacity_timeout=300,
                          workers_timeout=300)
            provider = EksProvider(None, ctx, user="bench", poll=0.25)

            async def one() -> dict[str, Any]:
                try:
                    return await _measure(provider, f"w{n}", spec, fake)
                finally:
                    await provider.close()

            results[n] = dict(asyncio.run(one()), nodes_planned=plan(spec).nodes)
    finally:
        fake.stop_in_thread()
        moto.stop()
    return results


def report(results: dict[int, dict[str, Any]]) -> str:
    lines = ["| workers | nodes | phase | AWS calls | Kubernetes calls | seconds |", "|---|---|---|---|---|---|"]
    for n, r in results.items():
        for p in ("create", "progress", "delete", "total"):
            lines.append(f"| {n} | {r['nodes_planned']} | {p} | {r[p]['aws']} | {r[p]['k8s']} | {r[p]['seconds']:.3f} |")
    return "\n".join(lines)


def rows(worker_counts: tuple[int, int] = (3, 300), timeout: float = 600) -> list[dict[str, Any]]:
    """`python -m bench` rows ``{name, value, unit, baseline, ratio}``: the large count against the small one.

    Runs this file as a subprocess (it sets AWS_* variables for moto in its own environment)."""
    import subprocess

    small, large = worker_counts
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--workers", str(small), str(large),
                           "--json"], capture_output=True, text=True, timeout=timeout, env=env, cwd=str(ROOT))
    if proc.returncode != 0:
        raise RuntimeError(f"eks_calls.py failed: {proc.stderr.strip().splitlines()[-1:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    a, b = data[str(small)]["total"], data[str(large)]["total"]

    def row(name: str, value: float, unit: str, baseline: float) -> dict[str, Any]:
        return {"name": name, "value": value, "unit": unit, "baseline": baseline,
                "ratio": value / baseline if baseline else None}

    return [row(f"EKS API calls (AWS+Kubernetes) create+progress+delete, {large} vs {small} workers",
                float(b["aws"] + b["k8s"]), "calls", float(a["aws"] + a["k8s"])),
            row(f"EKS orchestration time excl. node boot, {large} vs {small} workers", b["seconds"], "s",
                a["seconds"])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[3, 300])
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line at the end")
    args = parser.parse_args(argv)
    results = run(args.workers)
    print(__doc__.split("\n\n")[1].strip())
    print()
    print(report(results))
    if args.json:
        print(json.dumps({str(k): v for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
