"""The TLS setting of httpx clients that talk plain HTTP (OpenCode servers, gateway brokers).

httpx builds an SSL context for every client it makes, loading certifi's CA bundle (~15-25 ms of
CPU each), also for a client whose URLs are all ``http://127.0.0.1:…`` and never use TLS. A CLI
command makes one to three such clients (issue 11). For those, :func:`verify_for` gives a context
that still requires a valid certificate and hostname but trusts no CA: TLS is never used, and if
it were (an https URL), it would fail instead of going unverified.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl


def verify_for(url: str) -> ssl.SSLContext | bool:
    """``verify=`` for an httpx client of ``url``: the no-CA context for a plain ``http://``
    URL, else True (httpx's own verification with certifi's CAs)."""
    if not url.lower().startswith("http://"):
        return True
    import ssl  # here: a command that makes no client loads no ssl

    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, hostnames checked
