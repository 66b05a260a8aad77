"""reccd.tunnel: a resolver may return an object that opens the upstream socket itself."""

from __future__ import annotations

import asyncio
import socket

from reccd.tunnel import Tunnel


def test_resolver_with_open_connection():
    async def main():
        async def echo(reader, writer):
            writer.write(await reader.read(100))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        opened = []

        class Opener:
            host, port_ = "opener", 1

            @property
            def port(self):
                return self.port_

            async def open_connection(self):
                s = socket.create_connection(("127.0.0.1", port))
                s.setblocking(False)
                opened.append(s)
                return s

        async def resolve():
            return Opener()

        tunnel = Tunnel(resolve)
        local = await tunnel.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", local)
            writer.write(b"hello")
            await writer.drain()
            assert await asyncio.wait_for(reader.read(100), 5) == b"hello"
            writer.close()
            assert tunnel.state == "up" and len(opened) == 1
            assert tunnel.info()["upstream"] == "opener:1"
        finally:
            await tunnel.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())
