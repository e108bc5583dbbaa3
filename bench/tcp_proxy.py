"""A TCP forwarder put in front of Postgres (tests, `make chaos`), so the state store can be
frozen (SIGSTOP: connections are accepted by the kernel, nothing is answered) or refuse (killed).
`bench.processes.TcpProxy` runs it.

    python -m bench.tcp_proxy LISTEN_PORT TARGET_HOST TARGET_PORT
"""

from __future__ import annotations

import asyncio
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _serve(listen_port: int, host: str, port: int) -> None:
    async def forward(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection(host, port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, server_writer), _pipe(server_reader, client_writer))

    server = await asyncio.start_server(forward, "127.0.0.1", listen_port, reuse_address=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    listen, target_host, target_port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    asyncio.run(_serve(listen, target_host, target_port))
