"""What a running viewer exposes, said in words when it starts (binding beyond loopback, share URLs)."""

from __future__ import annotations

import ipaddress

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the viewer on this machine (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def exposure_warnings(host: str, port: int, share: bool) -> list[str]:
    """One line per way the viewer can be reached from other machines (empty when it stays local)."""
    lines = []
    if not is_loopback(host):
        where = "any network this machine is on" if host in ("0.0.0.0", "::", "") else f"the network of {host}"
        lines.append(
            f"WARNING: listening on {host or 'all interfaces'}:{port}: anyone on {where} can open this viewer, "
            "see the scene, type queries and download its exports (there is no password); "
            "use --host 127.0.0.1 to keep it on this machine"
        )
    if share:
        lines.append(
            "WARNING: --share publishes this viewer through viser's public share server: anyone with the URL "
            "can see the scene, type queries and download its exports until you stop the viewer"
        )
    return lines
