"""``python -m tests.fakekube --port 0 [--moto-endpoint URL] [--cluster-name NAME]``.

Prints the server's URL as the first line on stdout, then serves until SIGTERM or SIGINT,
when it stops every pod process it started. Run it from the repository root (``tests`` must
be importable).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from tests.fakekube.server import FakeKube


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.fakekube", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    p.add_argument("--cluster-name", default="recc-test", help="the EKS cluster name tokens must be made for")
    p.add_argument("--moto-endpoint", help="moto server URL to read Auto Scaling groups and instances from")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--node-poll-interval", type=float, default=1.0, help="seconds between moto polls")
    p.add_argument("--no-remap-ports", action="store_true",
                   help="run pod processes on their declared containerPorts instead of free host ports")
    p.add_argument("--no-processes", action="store_true",
                   help="mark bound pods Running without starting their commands (for call-count benchmarks)")
    p.add_argument("--max-grace", type=float, default=5.0, help="cap on a pod's termination grace period")
    p.add_argument("--clock-offset", type=float, default=0.0, help="seconds added to the wall clock")
    p.add_argument("--known-secret", action="append", default=[], metavar="ACCESS_KEY_ID:SECRET",
                   help="verify the signature (and so the cluster name) of tokens made with this key")
    p.add_argument("--log-level", default="WARNING")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    from tests.fakekube.clock import Clock

    secrets = dict(s.split(":", 1) for s in args.known_secret)
    fake = FakeKube(cluster_name=args.cluster_name, moto_endpoint=args.moto_endpoint, region=args.region,
                    host=args.host, port=args.port, clock=Clock(args.clock_offset),
                    node_poll_interval=args.node_poll_interval, remap_ports=not args.no_remap_ports,
                    run_processes=not args.no_processes, max_grace=args.max_grace, known_secrets=secrets)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    url = await fake.start()
    print(url, flush=True)
    try:
        await stop.wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
