"""The Qt-free core, grouped by domain: process/ (start, watch, kill), servers/ (per-workspace
OpenCode servers), opencode/ (the binary and its API), launch/ (terminal and browser UIs),
storage/ (paths, settings, secrets, atomic files), backend.py (SmartSpecPro) and wiring.py (the
composition of all of it for one process).

Nothing under this package may import Qt; it is used alike by the CLI, the window and the tests.
"""
