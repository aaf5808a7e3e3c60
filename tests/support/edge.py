"""In-test edge clients: the real EdgeHub (real TLS, real WebSockets) driven from asyncio."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import AsyncIterator

from kedge.edge.hub import EdgeHub
from kedge.edge.metamanager.store import MetaStore
from kedge.protocol import message as m


@contextlib.asynccontextmanager
async def edge_hub(edge_dir: Path, **kw) -> AsyncIterator[EdgeHub]:
    hub = EdgeHub(edge_dir, **kw)
    task = asyncio.create_task(hub.run())
    try:
        async with asyncio.timeout(15):
            while not hub.connected.is_set():
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        yield hub
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def hubinfo(hub: EdgeHub, timeout: float = 5.0) -> dict:
    """Ask CloudHub who we are: proves the tunnel is up and served."""
    reply = await hub.request(hub.new_message(m.QUERY, f"{hub.node}/hubinfo/{hub.node}", None, "hub"),
                              timeout=timeout)
    assert reply.route.operation == m.RESPONSE, reply
    return reply.content


def edge_inventory(edge_dir: Path) -> dict[str, str]:
    """Live keys in an edge's store, read beside the running edgecore (WAL)."""
    if not (edge_dir / "edge.db").exists():
        return {}
    store = MetaStore(edge_dir / "edge.db", edge_dir / "edge.key")
    try:
        return store.snapshot()[0]
    finally:
        store.close()
