"""The inventory an edge reports on connect is peer input: bounded before it is kept."""

import pytest

from kedge.cloud.edgecontroller import controller as ctl
from kedge.errors import PeerError


class _Session:
    node = "edge-1"


def test_inventory_larger_than_the_bound_is_refused_and_forgotten(monkeypatch):
    monkeypatch.setattr(ctl, "MAX_INVENTORY_ENTRIES", 5)
    c = ctl.EdgeController(api=None)
    s = _Session()
    page = {"snapshot": "s", "page": 1, "pages": 3, "inventory": {f"default/pod/p{i}": "1" for i in range(4)},
            "tombstones": {}}
    assert c._inventory_page(s, page) == {"received": 1}
    page2 = dict(page, page=2, inventory={f"default/pod/q{i}": "1" for i in range(4)})
    with pytest.raises(PeerError) as info:
        c._inventory_page(s, page2)
    assert info.value.code == "inventory_too_large"
    assert "edge-1" not in c._pages


def test_too_many_pages_is_refused():
    c = ctl.EdgeController(api=None)
    with pytest.raises(PeerError):
        c._inventory_page(_Session(), {"snapshot": "s", "page": 1, "pages": ctl.MAX_INVENTORY_PAGES + 1,
                                       "inventory": {}, "tombstones": {}})
