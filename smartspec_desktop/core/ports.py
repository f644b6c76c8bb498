"""Choosing a port: the first free one in the preferred range (3795–3800), else one the OS picks.

Checking is racy by nature (another program may take the port before the server binds it), so the
server manager treats "address in use" from the server as retryable on the next candidate.
"""

from __future__ import annotations

import socket
from collections.abc import Container

HOST = "127.0.0.1"


def port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Match what a server does (SO_REUSEADDR), so a TIME_WAIT leftover is not "busy".
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def os_assigned_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def pick_port(
    preferred: tuple[int, int], exclude: Container[int] = (), host: str = HOST
) -> tuple[int, bool]:
    """Return ``(port, in_preferred_range)``; ``exclude`` holds ports other servers claim."""
    first, last = preferred
    for port in range(first, last + 1):
        if port not in exclude and port_is_free(port, host):
            return port, True
    while True:
        port = os_assigned_port(host)
        if port not in exclude:
            return port, False
