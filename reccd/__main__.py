"""``reccd``: run the RECC daemon in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import sys

from recc.errors import RECCError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="reccd", description="The RECC per-user daemon (foreground). Usually started by `recc` on demand.")
    parser.add_argument("--job-parent", type=int, metavar="PID",
                        help="run as a job daemon: delete every cluster and exit when process PID ends")
    args = parser.parse_args(argv)
    from reccd.daemon import serve

    try:
        asyncio.run(serve(job_parent=args.job_parent))
    except RECCError as exc:
        print(f"reccd: {exc.message}" + (f"\n  hint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
