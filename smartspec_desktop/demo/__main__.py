"""Run the local SmartSpecPro backend on its own: ``python -m smartspec_desktop.demo --port N``.

It listens on 127.0.0.1 only, creates one user and one API key, and prints both (the key is a
throw-away credential of this local process only), then serves until Ctrl+C or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from typing import TextIO

from smartspec_desktop.demo.backend import GATEWAY_MODES, BackendStandIn

DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "Demo-password-1"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m smartspec_desktop.demo",
        description="A local SmartSpecPro backend (127.0.0.1 only) with simulated credits.",
    )
    p.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0: any free one)")
    p.add_argument(
        "--gateway",
        choices=GATEWAY_MODES,
        default="demo",
        help="demo: scripted demo answers (default); real: the real service's current chat "
        "defect; scripted: the default test reply",
    )
    p.add_argument("--email", default=DEMO_EMAIL)
    p.add_argument("--password", default=DEMO_PASSWORD)
    p.add_argument("--credits", type=float, default=10000.0)
    p.add_argument(
        "--no-rate-limit", action="store_true", help="turn off the 60 requests a minute limit"
    )
    return p


def main(
    argv: Sequence[str] | None = None, out: TextIO = sys.stdout, stop: threading.Event | None = None
) -> int:
    args = build_parser().parse_args(argv)
    backend = BackendStandIn(gateway=args.gateway, port=args.port)
    if args.no_rate_limit:
        backend.rate_limit_per_minute = None
    try:
        backend.start()
    except OSError as e:
        print(
            f"error: cannot listen on 127.0.0.1:{args.port} ({e.strerror}). "
            "Choose another port with --port (0 picks a free one).",
            file=sys.stderr,
        )
        return 1
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        backend.add_user(args.email, args.password, credits=args.credits)
        key = backend.issue_api_key(args.email, name="demo")
        out.write(
            f"SmartSpecPro demo backend on {backend.url} (gateway: {args.gateway})\n"
            f"  login:    {args.email} / {args.password}\n"
            f"  API key:  {key}\n"
            f"  use:      smartspec-desktop --backend-url {backend.url} …  "
            f"(or SMARTSPEC_API_KEY=<key>)\n"
            "Ctrl+C stops it.\n"
        )
        out.flush()
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    finally:
        backend.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
