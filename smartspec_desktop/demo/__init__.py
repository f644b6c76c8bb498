"""A local SmartSpecPro backend for demos and tests (no Qt; standard library only).

:mod:`smartspec_desktop.demo.backend` implements the backend contract; run it on its own with
``python -m smartspec_desktop.demo --port N``.
"""
