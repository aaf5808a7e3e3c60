"""``kedge edgecore``: the edge node process. Must never import the kubernetes client."""

from __future__ import annotations

import logging
from pathlib import Path

from kedge.edge.hub import EdgeHub

log = logging.getLogger(__name__)


async def run_edgecore(data_dir: str | Path) -> None:
    hub = EdgeHub(data_dir)
    log.info("edgecore for node %s starting", hub.node)
    await hub.run()
