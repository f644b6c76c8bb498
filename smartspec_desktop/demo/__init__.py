"""A local SmartSpecPro backend for demos and tests (no Qt).

:mod:`smartspec_desktop.demo.backend` implements the backend contract (standard library only);
run it on its own with ``python -m smartspec_desktop.demo --port N``. :mod:`.mode` is the app's
demo mode (``smartspec-desktop --demo``): its folders, the detached demo gateway, the demo's core.
"""
