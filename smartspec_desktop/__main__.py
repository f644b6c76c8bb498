"""Entry point: ``smartspec-desktop [COMMAND]``; without a command, the window."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--supervise"]:  # the frozen app re-executes itself as the supervisor
        from smartspec_desktop.core.process.supervisor import main as supervise

        return supervise(argv[1:])
    if argv[:1] == ["--demo-gateway"]:  # the demo backend's own process (see demo/mode.py)
        from smartspec_desktop.demo.mode import gateway_main

        return gateway_main(argv[1:])

    from smartspec_desktop.cli import build_parser, run_cli

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        try:
            from smartspec_desktop.ui.app import run_gui
        except ImportError as e:
            sys.stderr.write(
                f"error: the window cannot start ({e}). Install the GUI dependencies "
                "(pip install -e .) or use a command: smartspec-desktop --help\n"
            )
            return 1
        return int(run_gui(args))
    return run_cli(args)


if __name__ == "__main__":
    sys.exit(main())
