"""The environment for programs that are not us (opencode, npm, terminals). Standard library
only: the supervisor imports it and must start fast."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

#: What PyInstaller's bootloader (and its Qt hook) set for the frozen app's own bundled libraries.
_FROZEN_LIB_VARS = ("LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH", "LIBPATH")
_FROZEN_QT_VARS = ("QT_PLUGIN_PATH", "QML2_IMPORT_PATH", "QT_QPA_PLATFORM_PLUGIN_PATH")


def external_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a program that is not us (opencode, npm, a terminal).

    In a frozen app the bootloader points ``LD_LIBRARY_PATH`` (macOS/AIX: the like) at the
    bundle's libraries and the Qt hook points Qt at the bundle's plugins; a child inheriting that
    loads our copies of libstdc++/OpenSSL/GLib/Qt instead of its own. Undo it as PyInstaller
    documents: restore ``*_ORIG`` (or drop the variable), and drop ``_PYI_*`` so another frozen
    program does not take our bundle for its own. Outside a frozen app: a plain copy.
    """
    env = dict(os.environ if environ is None else environ)
    if not getattr(sys, "frozen", False):
        return env
    for key in _FROZEN_LIB_VARS:
        orig = env.pop(key + "_ORIG", None)
        if orig is not None:
            env[key] = orig
        else:
            env.pop(key, None)
    bundle = getattr(sys, "_MEIPASS", None)
    for key in _FROZEN_QT_VARS:
        if bundle and env.get(key, "").startswith(bundle):
            del env[key]
    for key in [k for k in env if k.startswith("_PYI_")]:
        del env[key]
    return env
