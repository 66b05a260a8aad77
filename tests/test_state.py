"""The daemon's state database: listings carry no key material and see every write, from any process."""

from __future__ import annotations

import asyncio
from pathlib import Path

from reccd.state import State

SPEC = {"provider": "local", "template": "local", "n_workers": 1}
TLS = {"ca_cert": "-----BEGIN CERTIFICATE-----", "client_key": "secret"}


def test_a_listing_sees_every_write_its_own_and_another_process(tmp_path: Path) -> None:
    async def scenario() -> None:
        daemon, other = State(tmp_path / "state.db"), State(tmp_path / "state.db")
        await daemon.open()
        await other.open()
        try:
            row = await daemon.insert_cluster("c1", SPEC, TLS, "token", "me")
            [listed] = await daemon.list()
            assert listed["status"] == "pending" and "tls" not in listed  # no key material in listings
            assert (await daemon.find_live("c1"))["tls"] == TLS  # `connection` reads it from the one row

            listed["status"] = "changed by a caller"
            assert [r["status"] for r in await daemon.list()] == ["pending"]  # each call, new row dicts

            await daemon.update(row["id"], status="running")  # this connection's write
            assert [r["status"] for r in await daemon.list()] == ["running"]
            await other.update(row["id"], status="deleting")  # another connection's (`recc harvest`)
            assert [r["status"] for r in await daemon.list()] == ["deleting"]
            await other.insert_cluster("c2", SPEC, TLS, "token", "me")
            assert [r["name"] for r in await daemon.list()] == ["c1", "c2"]
            await other.update(row["id"], status="deleted")
            assert [r["name"] for r in await daemon.list()] == ["c2"]
            assert [r["name"] for r in await daemon.list(include_gone=True)] == ["c1", "c2"]
        finally:
            await daemon.close()
            await other.close()

    asyncio.run(scenario())
