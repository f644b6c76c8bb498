"""Build the command that opens a *new* terminal window running one program.

Used to run ``opencode attach http://127.0.0.1:<port> --dir <workspace>`` in a window of its own.
This module only builds arguments: it starts nothing. The caller passes the result to
``subprocess.Popen(launch.argv, cwd=launch.cwd, env=launch.env, creationflags=...)``.

Secrets (the server password) travel only in the child's environment, never in ``argv`` (which
other local users can read in ``ps``). macOS terminals are the exception that needs more work:
Terminal.app and iTerm2 do not give the new window the environment of whoever asked for it, so for
them a private launcher script (mode 0700, deleting itself when it runs) exports the secret.

Terminals whose second start only asks an already running instance for a window would lose the
environment too; where a terminal has a switch that forces a process of its own, it is used
(``konsole --separate``, ``xfce4-terminal --disable-server``, ``tilix --new-process``,
``terminator -u``, ``lxterminal --no-remote``). gnome-terminal and wezterm forward the client's
environment themselves. Windows Terminal hands the caller's environment to the new tab only
in releases since late 2023 (microsoft/terminal#15897); older ones drop it.

Nothing here imports Qt, and everything that touches the machine (``which``, ``realpath``, the
environment, the platform) can be injected, so the tests build every variant on any OS.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from smartspec_desktop.core.errors import LaunchError, NoTerminalError
from smartspec_desktop.core.process.childenv import external_env

#: ``subprocess.CREATE_NEW_CONSOLE`` (defined here: the constant exists only on Windows).
CREATE_NEW_CONSOLE = 0x00000010

#: Where the user picks a terminal; named in every error so the fix is one click away.
SETTING = "Settings → Terminal"
#: The example of a custom terminal command shown in error messages.
CUSTOM_EXAMPLE = "myterm -e {command}"

TERMINAL_APP = "Terminal.app"
ITERM = "iTerm2"
WINDOWS_TERMINAL = "wt"
PWSH = "pwsh"
POWERSHELL = "powershell"
CMD = "cmd"

Which = Callable[[str], str | None]
_Builder = Callable[[list[str], list[str], str, str], list[str]]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PLACEHOLDER = re.compile(r"\{(command|cwd|title)\}")
# C0 and C1 control characters: kept out of titles so a title cannot inject escape sequences.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# A secret this long that shows up in argv is no coincidence: refuse to build the launch.
_MIN_GUARDED_SECRET = 8


@dataclass(frozen=True)
class TerminalLaunch:
    """Everything ``subprocess.Popen`` needs to open the window."""

    argv: list[str]  # what to Popen
    cwd: str | None  # working directory for Popen
    env: dict[str, str]  # the complete environment for the child (base env + extra)
    script_path: str | None  # a private launcher script that was written (macOS), else None
    terminal: str  # display name, e.g. "xterm", "Terminal.app", "custom"
    creationflags: int = 0  # Windows: CREATE_NEW_CONSOLE where needed


# --------------------------------------------------------------------------------------------
# Linux / BSD conventions (also used on macOS when such a terminal is named explicitly)
# --------------------------------------------------------------------------------------------


def _xdg_terminal_exec(exe: list[str], cmd: list[str], cwd: str, title: str) -> list[str]:
    # ``--dir=``/``--title=`` only exist since xdg-terminal-exec 0.11 (2024); older versions
    # would run "--dir=..." as the command. The bare form works with every version, and the
    # directory still arrives through Popen's cwd (and ``attach --dir``).
    return [*exe, *cmd]


def _xterm_style(exe: list[str], cmd: list[str], cwd: str, title: str) -> list[str]:
    # Debian policy requires -T and -e from every x-terminal-emulator; -e must come last.
    return [*exe, "-T", title, "-e", *cmd]


def _gnome_terminal(exe: list[str], cmd: list[str], cwd: str, title: str) -> list[str]:
    return [*exe, f"--working-directory={cwd}", f"--title={title}", "--", *cmd]


def _konsole(exe: list[str], cmd: list[str], cwd: str, title: str) -> list[str]:
    # --separate: with "run all windows in a single process" on, the env would be lost.
    return [*exe, "--separate", "--workdir", cwd, "-e", *cmd]


def _xfce4_terminal(exe: list[str], cmd: list[str], cwd: str, title: str) -> list[str]:
    # The D-Bus hand-off to a running instance forwards argv but not the environment.
    return [*exe, "--disable-server", f"--working-directory={cwd}", "-T", title, "-x", *cmd]


def _kitty(exe: list[str], cmd: list[str], cwd: str, title: str) -> list[str]:
    return [*exe, "--directory", cwd, "--title", title, *cmd]


def _alacritty(exe: list[str], cmd: list[str], cwd: str, title: str) -> list[str]:
    return [*exe, "--working-directory", cwd, "--title", title, "-e", *cmd]


def _wezterm(exe: list[str], cmd: list[str], cwd: str, title: str) -> list[str]:
    return [*exe, "start", "--cwd", cwd, "--", *cmd]


def _foot(exe: list[str], cmd: list[str], cwd: str, title: str) -> list[str]:
    return [*exe, f"--working-directory={cwd}", f"--title={title}", "--", *cmd]


def _tilix(exe: list[str], cmd: list[str], cwd: str, title: str) -> list[str]:
    # -e takes one string. --new-process: a running tilix ignores the caller's env (tilix#2134).
    return [*exe, "--new-process", "-w", cwd, "-t", title, "-e", shlex.join(cmd)]


def _terminator(exe: list[str], cmd: list[str], cwd: str, title: str) -> list[str]:
    # -u (no D-Bus): over D-Bus the env is lost and -x arguments are re-joined with spaces.
    return [*exe, "-u", f"--working-directory={cwd}", "-T", title, "-x", *cmd]


def _lxterminal(exe: list[str], cmd: list[str], cwd: str, title: str) -> list[str]:
    # --no-remote: otherwise a running lxterminal opens the window with its own env.
    return [
        *exe,
        "--no-remote",
        f"--working-directory={cwd}",
        f"--title={title}",
        f"--command={shlex.join(cmd)}",
    ]


#: Known terminals in the priority order used by "auto" (after ``$TERMINAL``).
_POSIX_BUILDERS: dict[str, _Builder] = {
    "xdg-terminal-exec": _xdg_terminal_exec,
    "x-terminal-emulator": _xterm_style,
    "gnome-terminal": _gnome_terminal,
    "konsole": _konsole,
    "xfce4-terminal": _xfce4_terminal,
    "kitty": _kitty,
    "alacritty": _alacritty,
    "wezterm": _wezterm,
    "foot": _foot,
    "tilix": _tilix,
    "terminator": _terminator,
    "lxterminal": _lxterminal,
    "xterm": _xterm_style,
}
POSIX_TERMINALS: tuple[str, ...] = tuple(_POSIX_BUILDERS)

#: Variables removed from the child's env per terminal (terminator is a Python program and
#: breaks on a foreign PYTHONPATH, e.g. one set by a bundled interpreter).
_ENV_DROP: dict[str, tuple[str, ...]] = {"terminator": ("PYTHONPATH", "PYTHONHOME")}

_MAC_ALIASES = {
    "terminal": TERMINAL_APP,
    "terminal.app": TERMINAL_APP,
    "apple terminal": TERMINAL_APP,
    "iterm": ITERM,
    "iterm2": ITERM,
    "iterm.app": ITERM,
}
_WINDOWS_ALIASES = {
    "wt": WINDOWS_TERMINAL,
    "wt.exe": WINDOWS_TERMINAL,
    "windows terminal": WINDOWS_TERMINAL,
    "windowsterminal": WINDOWS_TERMINAL,
    "powershell": POWERSHELL,
    "powershell.exe": POWERSHELL,
    "pwsh": PWSH,
    "pwsh.exe": PWSH,
    "cmd": CMD,
    "cmd.exe": CMD,
    "conhost": CMD,
}
_ITERM_DIRS = ("/Applications/iTerm.app",)


@dataclass(frozen=True)
class _Candidate:
    name: str  # display name
    exe: list[str]  # resolved executable, plus any arguments from $TERMINAL
    convention: str | None  # key of _POSIX_BUILDERS, or None for "unknown: use -e"


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def available_terminals(
    platform: str = sys.platform,
    which: Which = shutil.which,
    environ: Mapping[str, str] | None = None,
    *,
    realpath: Callable[[str], str] = os.path.realpath,
    isdir: Callable[[str], bool] = os.path.isdir,
) -> list[str]:
    """Names of the terminals found on this machine, in the order "auto" tries them.

    Each name is also a valid ``preference`` for :func:`build_terminal_launch`, except a
    ``$TERMINAL`` program that is not one of the known terminals.
    """
    env = os.environ if environ is None else environ
    if platform == "win32":
        return [name for name, _ in _windows_found(which)]
    names: list[str] = []
    if platform == "darwin":
        names.append(TERMINAL_APP)
        if _iterm_installed(env, isdir):
            names.append(ITERM)
    for cand in _posix_candidates(env, which, realpath, use_terminal_var=platform != "darwin"):
        if cand.name not in names:
            names.append(cand.name)
    return names


def build_terminal_launch(
    command: Sequence[str],
    *,
    cwd: str,
    title: str,
    secret_env: Mapping[str, str],
    preference: str = "auto",
    platform: str = sys.platform,
    environ: Mapping[str, str] | None = None,
    which: Which = shutil.which,
    script_dir: str | None = None,
    realpath: Callable[[str], str] = os.path.realpath,
    isdir: Callable[[str], bool] = os.path.isdir,
) -> TerminalLaunch:
    """Build the launch of a new terminal window that runs ``command`` in ``cwd``.

    ``preference`` is "auto", a terminal name (see :func:`available_terminals`) or a custom
    template containing ``{command}`` (and optionally ``{cwd}``/``{title}``), e.g.
    ``"myterm --cwd={cwd} -e {command}"``: a token that is exactly ``{command}`` becomes the
    command's arguments; ``{command}`` inside a larger token becomes the quoted command line;
    ``{cwd}``/``{title}`` are replaced by their plain values.

    Raises :class:`NoTerminalError` when no (or not the requested) terminal is installed and
    :class:`LaunchError` for an unusable setting or a launcher script that cannot be written.
    """
    cmd = [str(part) for part in command]
    if not cmd:
        raise LaunchError("There is no command to run in the terminal.")
    _check_secret_env(secret_env)
    env = external_env(environ)  # a frozen app's library paths must not reach the terminal
    env.update(secret_env)
    title = _clean_title(title)
    pref = (preference or "").strip()

    if pref == "" or pref.lower() == "auto":
        launch = _auto(
            cmd, cwd, title, secret_env, env, platform, which, realpath, isdir, script_dir
        )
    elif "{command}" in pref:
        launch = _custom(pref, cmd, cwd, title, env, platform, which)
    else:
        launch = _named(
            pref, cmd, cwd, title, secret_env, env, platform, which, realpath, isdir, script_dir
        )
    _guard_argv(launch.argv, secret_env)
    return launch


# --------------------------------------------------------------------------------------------
# Choosing the terminal
# --------------------------------------------------------------------------------------------


def _auto(
    cmd: list[str],
    cwd: str,
    title: str,
    secret_env: Mapping[str, str],
    env: dict[str, str],
    platform: str,
    which: Which,
    realpath: Callable[[str], str],
    isdir: Callable[[str], bool],
    script_dir: str | None,
) -> TerminalLaunch:
    if platform == "darwin":
        return _macos(TERMINAL_APP, cmd, cwd, title, secret_env, env, script_dir)
    if platform == "win32":
        found = _windows_found(which)
        if not found:
            raise _nothing_found(platform)
        name, exe = found[0]
        return _windows(name, exe, cmd, cwd, title, env)
    candidates = _posix_candidates(env, which, realpath, use_terminal_var=True)
    if not candidates:
        raise _nothing_found(platform)
    return _posix(candidates[0], cmd, cwd, title, env)


def _named(
    pref: str,
    cmd: list[str],
    cwd: str,
    title: str,
    secret_env: Mapping[str, str],
    env: dict[str, str],
    platform: str,
    which: Which,
    realpath: Callable[[str], str],
    isdir: Callable[[str], bool],
    script_dir: str | None,
) -> TerminalLaunch:
    key = pref.lower()

    def missing(name: str) -> NoTerminalError:
        found = available_terminals(platform, which, env, realpath=realpath, isdir=isdir)
        return _not_installed(name, found, platform)

    if platform == "win32":
        wanted = _WINDOWS_ALIASES.get(key)
        if wanted is None:
            raise _unknown_setting(pref, platform)
        for name, exe in _windows_found(which):
            if name == wanted or (wanted == POWERSHELL and name == PWSH):
                return _windows(name, exe, cmd, cwd, title, env)
        raise missing(wanted)

    if platform == "darwin" and key in _MAC_ALIASES:
        app = _MAC_ALIASES[key]
        if app == ITERM and not _iterm_installed(env, isdir):
            raise missing(ITERM)
        return _macos(app, cmd, cwd, title, secret_env, env, script_dir)

    if key in _POSIX_BUILDERS:
        path = which(key)
        if path is None:
            raise missing(key)
        cand = _candidate_for(key, path, realpath)
        return _posix(cand, cmd, cwd, title, env)
    raise _unknown_setting(pref, platform)


def _posix_candidates(
    environ: Mapping[str, str],
    which: Which,
    realpath: Callable[[str], str],
    *,
    use_terminal_var: bool,
) -> list[_Candidate]:
    """Installed terminals in "auto" order: ``$TERMINAL`` first, then the known list."""
    found: list[_Candidate] = []
    if use_terminal_var:
        from_var = _terminal_var_candidate(environ, which, realpath)
        if from_var is not None:
            found.append(from_var)
    for name in POSIX_TERMINALS:
        path = which(name)
        if path is not None:
            found.append(_candidate_for(name, path, realpath))
    return found


def _terminal_var_candidate(
    environ: Mapping[str, str], which: Which, realpath: Callable[[str], str]
) -> _Candidate | None:
    raw = environ.get("TERMINAL", "").strip()
    if not raw:
        return None
    try:
        parts = shlex.split(raw)
    except ValueError:
        return None
    if not parts:
        return None
    path = which(parts[0])
    if path is None:
        return None  # not installed: fall through to the known list
    known = _identify(path, realpath)
    if known is None:
        return _Candidate(os.path.basename(parts[0]), [path, *parts[1:]], None)
    convention, exe = known
    return _Candidate(convention, [exe, *parts[1:]], convention)


def _candidate_for(name: str, path: str, realpath: Callable[[str], str]) -> _Candidate:
    """A known terminal found on PATH as ``name``; only x-terminal-emulator needs resolving."""
    if name != "x-terminal-emulator":
        return _Candidate(name, [path], name)
    known = _identify(path, realpath)
    convention, exe = known if known is not None else (name, path)
    return _Candidate(convention, [exe], convention)


def _identify(path: str, realpath: Callable[[str], str]) -> tuple[str, str] | None:
    """Which known convention the program at ``path`` follows, and the executable to run.

    ``x-terminal-emulator`` (and anything else that is a symlink) is resolved: when it points at a
    known terminal, that terminal's own convention is used with the real path. Debian's
    ``*.wrapper`` scripts are not "known", so they keep the xterm-style ``-T``/``-e`` they exist
    to translate.
    """
    name = _canonical(os.path.basename(path))
    if name in _POSIX_BUILDERS and name != "x-terminal-emulator":
        return name, path
    try:
        real = realpath(path)
    except OSError:
        real = path
    real_name = _canonical(os.path.basename(real))
    if real_name in _POSIX_BUILDERS and real_name != "x-terminal-emulator":
        return real_name, real
    if name == "x-terminal-emulator":
        return name, path
    return None


def _canonical(basename: str) -> str:
    # Ubuntu ships the gnome-terminal binary as gnome-terminal.real behind a wrapper script.
    return basename[: -len(".real")] if basename.endswith(".real") else basename


def _iterm_installed(environ: Mapping[str, str], isdir: Callable[[str], bool]) -> bool:
    dirs = list(_ITERM_DIRS)
    home = environ.get("HOME")
    if home:
        dirs.append(os.path.join(home, "Applications", "iTerm.app"))
    return any(isdir(d) for d in dirs)


def _windows_found(which: Which) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for name in (WINDOWS_TERMINAL, PWSH, POWERSHELL, CMD):
        path = which(name)
        if path is not None:
            found.append((name, path))
    return found


# --------------------------------------------------------------------------------------------
# Building the argv
# --------------------------------------------------------------------------------------------


def _posix(
    cand: _Candidate, cmd: list[str], cwd: str, title: str, env: dict[str, str]
) -> TerminalLaunch:
    builder = _POSIX_BUILDERS[cand.convention] if cand.convention else _generic
    argv = builder(list(cand.exe), cmd, cwd, title)
    for var in _ENV_DROP.get(cand.convention or "", ()):
        env.pop(var, None)
    return TerminalLaunch(argv=argv, cwd=cwd, env=env, script_path=None, terminal=cand.name)


def _generic(exe: list[str], cmd: list[str], cwd: str, title: str) -> list[str]:
    # An unknown $TERMINAL: -e is the one convention nearly all terminals share.
    return [*exe, "-e", *cmd]


def _custom(
    template: str,
    cmd: list[str],
    cwd: str,
    title: str,
    env: dict[str, str],
    platform: str,
    which: Which,
) -> TerminalLaunch:
    try:
        tokens = _split_template(template, windows=platform == "win32")
    except ValueError as exc:
        raise LaunchError(
            f"The custom terminal command in {SETTING} cannot be parsed ({exc}).",
            f"Check its quotes, e.g. `{CUSTOM_EXAMPLE}`.",
        ) from exc
    joined = subprocess.list2cmdline(cmd) if platform == "win32" else shlex.join(cmd)
    values = {"command": joined, "cwd": cwd, "title": title}
    argv: list[str] = []
    for token in tokens:
        if token == "{command}":
            argv.extend(cmd)
        elif token == "{cwd}":
            argv.append(cwd)
        elif token == "{title}":
            argv.append(title)
        else:
            argv.append(_PLACEHOLDER.sub(lambda m: values[m.group(1)], token))
    program = which(argv[0]) if argv and argv[0] else None
    if program is None:
        shown = argv[0] if argv and argv[0] else template
        raise NoTerminalError(
            f"The program “{shown}” of the custom terminal command in {SETTING} was not found.",
            f"Install it or correct the setting (it must start with a program, e.g. "
            f"`{CUSTOM_EXAMPLE}`).",
        )
    argv[0] = program
    return TerminalLaunch(argv=argv, cwd=cwd, env=env, script_path=None, terminal="custom")


def _split_template(template: str, *, windows: bool) -> list[str]:
    if not windows:
        return shlex.split(template)
    # POSIX shlex would eat the backslashes of Windows paths: split without escapes instead and
    # drop the quotes around a token ("C:\Program Files\x.exe" -e {command}).
    lexer = shlex.shlex(template, posix=False)
    lexer.whitespace_split = True
    lexer.commenters = ""
    tokens = []
    for token in lexer:
        if len(token) >= 2 and token[0] == token[-1] and token[0] in "\"'":
            token = token[1:-1]
        tokens.append(token)
    return tokens


def _macos(
    app: str,
    cmd: list[str],
    cwd: str,
    title: str,
    secret_env: Mapping[str, str],
    env: dict[str, str],
    script_dir: str | None,
) -> TerminalLaunch:
    directory = script_dir if script_dir is not None else tempfile.gettempdir()
    suffix = ".command" if app == TERMINAL_APP else ".sh"
    script = _write_launcher_script(directory, suffix, cmd, cwd, title, secret_env)
    if app == TERMINAL_APP:
        argv = ["open", "-a", "Terminal", script]
    else:
        # iTerm splits "command" like a shell would, so the path is shell-quoted first, then
        # escaped for the AppleScript string literal.
        shell_cmd = _applescript_string(shlex.quote(script))
        argv = [
            "osascript",
            "-e",
            f'tell application "iTerm" to create window with default profile command {shell_cmd}',
        ]
    return TerminalLaunch(argv=argv, cwd=cwd, env=env, script_path=script, terminal=app)


def _applescript_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def launcher_script_text(
    cmd: Sequence[str], cwd: str, title: str, secret_env: Mapping[str, str]
) -> str:
    """The text of the macOS launcher script (exposed for tests and diagnostics)."""
    lines = [
        "#!/bin/sh",
        "# Written by SmartSpec Desktop to open one terminal window; it deletes itself first.",
        'rm -f "$0"',
    ]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in secret_env.items()]
    lines.append(f"cd {shlex.quote(cwd)} || exit 1")
    if title:
        lines.append(f"printf '\\033]0;%s\\007' {shlex.quote(title)}")
    lines.append(f"exec {shlex.join(list(cmd))}")
    return "\n".join(lines) + "\n"


def _write_launcher_script(
    directory: str,
    suffix: str,
    cmd: list[str],
    cwd: str,
    title: str,
    secret_env: Mapping[str, str],
) -> str:
    text = launcher_script_text(cmd, cwd, title, secret_env).encode("utf-8")
    path = os.path.join(directory, f"smartspec-terminal-{secrets.token_hex(8)}{suffix}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o700)
    except OSError as exc:
        raise LaunchError(
            f"Could not write the terminal launcher script in {directory}: {exc.strerror}.",
            "Check that the temporary folder exists and is writable.",
        ) from exc
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o700)  # exactly 0700, whatever the umask
        view = memoryview(text)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        os.close(fd)
        _unlink_quietly(path)
        raise LaunchError(
            f"Could not write the terminal launcher script {path}: {exc.strerror}.",
            "Check the free space in the temporary folder.",
        ) from exc
    os.close(fd)
    return path


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _windows(
    name: str, exe: str, cmd: list[str], cwd: str, title: str, env: dict[str, str]
) -> TerminalLaunch:
    if name == WINDOWS_TERMINAL:
        # ";" separates wt sub-commands anywhere on its command line: escape literal ones.
        argv = [
            exe,
            "-w",
            "new",
            "new-tab",
            "-d",
            _wt_escape(cwd),
            "--title",
            _wt_escape(title),
            "--",
            *(_wt_escape(arg) for arg in cmd),
        ]
        return TerminalLaunch(argv=argv, cwd=cwd, env=env, script_path=None, terminal=name)
    if name in (PWSH, POWERSHELL):
        script = " ".join(_ps_quote(arg) for arg in cmd)
        if title:
            script = f"$Host.UI.RawUI.WindowTitle = {_ps_quote(title)}; & {script}"
        else:
            script = f"& {script}"
        argv = [exe, "-NoExit", "-Command", script]
        return TerminalLaunch(
            argv=argv,
            cwd=cwd,
            env=env,
            script_path=None,
            terminal=name,
            creationflags=CREATE_NEW_CONSOLE,
        )
    argv = [exe, "/k", *_cmd_title(title), "&", *(_cmd_escape(arg) for arg in cmd)]
    return TerminalLaunch(
        argv=argv,
        cwd=cwd,
        env=env,
        script_path=None,
        terminal=name,
        creationflags=CREATE_NEW_CONSOLE,
    )


def _wt_escape(arg: str) -> str:
    return arg.replace(";", "\\;")


_PS_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"


def _ps_quote(arg: str) -> str:
    """A PowerShell single-quoted literal: PowerShell also treats the typographic single quotes
    as quotes, so each of them is doubled too."""
    return "'" + "".join(ch * 2 if ch in _PS_SINGLE_QUOTES else ch for ch in arg) + "'"


_CMD_SPECIAL = set('^&|<>()%!"')


def _cmd_title(title: str) -> list[str]:
    # The window title as plain words: a prefix command that does not start with a quote keeps
    # cmd /k from stripping the first and last quote of the line ("cmd /?", quote rule 2).
    words = "".join(ch for ch in title if ch not in _CMD_SPECIAL).split()
    return ["title", *(words or ["opencode"])]


def _cmd_escape(arg: str) -> str:
    """Escape ``arg`` for the line cmd.exe parses after ``/k``.

    ``subprocess.list2cmdline`` puts an argument in double quotes only when it contains a space
    or a tab (or is empty); inside quotes cmd's metacharacters are literal. Unquoted, they
    are escaped with a caret (``^%`` stops variable expansion on the command line too).
    """
    if not arg or " " in arg or "\t" in arg:
        return arg
    return "".join("^" + ch if ch in "^&|<>()%" else ch for ch in arg)


# --------------------------------------------------------------------------------------------
# Checks and errors
# --------------------------------------------------------------------------------------------


def _check_secret_env(secret_env: Mapping[str, str]) -> None:
    for key, value in secret_env.items():
        if not _ENV_NAME.match(key):
            raise LaunchError(f"Invalid environment variable name for the terminal: {key!r}.")
        if "\x00" in value:
            raise LaunchError(f"The value of {key} contains a NUL character.")


def _guard_argv(argv: Sequence[str], secret_env: Mapping[str, str]) -> None:
    for key, value in secret_env.items():
        if len(value) >= _MIN_GUARDED_SECRET and any(value in arg for arg in argv):
            raise LaunchError(
                f"Refusing to open the terminal: the value of {key} would appear on its "
                "command line, where other local users can read it."
            )


def _clean_title(title: str) -> str:
    return _CONTROL.sub("", title).strip()


def _install_hint(platform: str) -> str:
    if platform.startswith("linux"):
        return "Install one (for example `sudo apt install xterm`) or set"
    if platform in ("darwin", "win32"):
        return "Set"
    return "Install one (for example xterm) or set"


def _nothing_found(platform: str) -> NoTerminalError:
    return NoTerminalError(
        "No terminal program was found.",
        f"{_install_hint(platform)} a custom command in {SETTING}, such as `{CUSTOM_EXAMPLE}`.",
    )


def _not_installed(name: str, found: Sequence[str], platform: str) -> NoTerminalError:
    if found:
        fix = (
            f"Found: {', '.join(found)}. Choose one of them or “auto” in {SETTING}, "
            f"or set a custom command such as `{CUSTOM_EXAMPLE}`."
        )
    else:
        fix = (
            f"No other terminal was found either. {_install_hint(platform)} a custom command "
            f"in {SETTING}, such as `{CUSTOM_EXAMPLE}`."
        )
    return NoTerminalError(f"The terminal “{name}” chosen in {SETTING} was not found.", fix)


def supported_terminals(platform: str = sys.platform) -> list[str]:
    """The terminal names Settings → Terminal accepts on ``platform`` (besides auto/custom)."""
    if platform == "win32":
        return [WINDOWS_TERMINAL, POWERSHELL, PWSH, CMD]
    if platform == "darwin":
        return [TERMINAL_APP, ITERM, *POSIX_TERMINALS]
    return list(POSIX_TERMINALS)


def _unknown_setting(pref: str, platform: str) -> LaunchError:
    return LaunchError(
        f"{SETTING} is set to “{pref}”, which is neither a known terminal nor a custom command "
        "containing {command}.",
        f"Use “auto”, one of {', '.join(supported_terminals(platform))}, or a custom command such "
        f"as `{CUSTOM_EXAMPLE}` (optional: {{cwd}}, {{title}}).",
    )
