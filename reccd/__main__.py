"""``reccd``: run the RECC daemon in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import sys

from recc.errors import RECCError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="reccd", description="The RECC per-user daemon (foreground). Usually started by `recc` on demand.")
    parser.parse_args(argv)
    from reccd.daemon import serve

    try:
        asyncio.run(serve())
    except RECCError as exc:
        print(f"reccd: {exc.message}" + (f"\n  hint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
