"""Small address helpers."""

from __future__ import annotations

import ipaddress


def url_host(addr: str) -> str:
    """``addr`` as it goes in a URL's host part: IPv6 literals in brackets."""
    try:
        if ipaddress.ip_address(addr).version == 6:
            return f"[{addr}]"
    except ValueError:
        pass
    return addr
