"""The edge's metamanager: a durable, encrypted, newest-wins store of what the node was given.

* :mod:`.decide` -- the pure newest-resourceVersion-wins decision and tombstone pruning;
* :mod:`.store` -- :class:`MetaStore`, SQLite (WAL, synchronous=FULL) with secrets sealed
  by AES-256-GCM under ``EDGEDIR/edge.key``;
* :mod:`.handler` -- :class:`MetaManager`, the EdgeHub handler for group ``resource`` and
  the description of the resync (inventory) protocol.

Imports stay light (stdlib sqlite3; ``cryptography`` only once a secret is sealed or opened):
edgecore must stay small.
"""

from kedge.edge.metamanager.handler import MetaManager
from kedge.edge.metamanager.store import ApplyResult, MetaStore

__all__ = ["ApplyResult", "MetaManager", "MetaStore"]
