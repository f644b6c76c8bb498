"""Unit tests for core.launch.terminals: argument building only, no window is opened.

Every machine dependency is injected: ``which`` answers from a dict, ``realpath`` from a dict,
``environ`` is a plain dict and ``platform`` a string, so Linux, macOS and Windows variants all
run here. The only process started is ``sh``, to prove the macOS launcher script's quoting.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from smartspec_desktop.core.errors import LaunchError, NoTerminalError
from smartspec_desktop.core.launch.terminals import (
    CREATE_NEW_CONSOLE,
    POSIX_TERMINALS,
    TerminalLaunch,
    available_terminals,
    build_terminal_launch,
    launcher_script_text,
)

KEY = "OPENCODE_SERVER_PASSWORD"
SECRET = "pw-'single' \"double\" $HOME `id` \\back; & | *"
SECRETS = {KEY: SECRET}

OPENCODE = "/opt/oc/bin/opencode"
CWD = "/home/u/my ws"
CMD = [OPENCODE, "attach", "http://127.0.0.1:3795", "--dir", CWD]
JOINED = "/opt/oc/bin/opencode attach http://127.0.0.1:3795 --dir '/home/u/my ws'"
TITLE = "OpenCode – my ws"
BASE_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/home/u", "LANG": "C.UTF-8"}

WIN_OPENCODE = r"C:\Program Files\opencode\opencode.exe"
WIN_CWD = r"C:\Users\Jo Smith\a;b"
WIN_CMD = [WIN_OPENCODE, "attach", "http://127.0.0.1:3795", "--dir", WIN_CWD]
WIN_PATHS = {
    "wt": r"C:\Users\Jo\AppData\Local\Microsoft\WindowsApps\wt.exe",
    "pwsh": r"C:\Program Files\PowerShell\7\pwsh.exe",
    "powershell": r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe",
    "cmd": r"C:\Windows\System32\cmd.exe",
}


def which_of(paths: Mapping[str, str]) -> Callable[[str], str | None]:
    """A fake ``shutil.which`` that knows exactly ``paths`` (name -> absolute path)."""
    return lambda name: paths.get(name)


def installed(*names: str) -> Callable[[str], str | None]:
    return which_of({name: f"/usr/bin/{name}" for name in names})


def no_links(path: str) -> str:
    return path


def links(mapping: Mapping[str, str]) -> Callable[[str], str]:
    return lambda path: mapping.get(path, path)


def linux(
    *names: str,
    preference: str = "auto",
    environ: Mapping[str, str] | None = None,
    which: Callable[[str], str | None] | None = None,
    realpath: Callable[[str], str] = no_links,
    command: list[str] | None = None,
    title: str = TITLE,
) -> TerminalLaunch:
    return build_terminal_launch(
        CMD if command is None else command,
        cwd=CWD,
        title=title,
        secret_env=SECRETS,
        preference=preference,
        platform="linux",
        environ=BASE_ENV if environ is None else environ,
        which=installed(*names) if which is None else which,
        realpath=realpath,
    )


def windows(*names: str, preference: str = "auto", title: str = "OpenCode") -> TerminalLaunch:
    return build_terminal_launch(
        WIN_CMD,
        cwd=WIN_CWD,
        title=title,
        secret_env=SECRETS,
        preference=preference,
        platform="win32",
        environ={"PATH": r"C:\Windows", "SystemRoot": r"C:\Windows"},
        which=which_of({name: WIN_PATHS[name] for name in names}),
    )


def mac(
    script_dir: Path,
    preference: str = "auto",
    *,
    iterm: bool = False,
    which: Callable[[str], str | None] | None = None,
    command: list[str] | None = None,
    cwd: str = CWD,
    secret_env: Mapping[str, str] = SECRETS,
) -> TerminalLaunch:
    iterm_dir = "/Applications/iTerm.app"
    return build_terminal_launch(
        CMD if command is None else command,
        cwd=cwd,
        title=TITLE,
        secret_env=secret_env,
        preference=preference,
        platform="darwin",
        environ=BASE_ENV,
        which=which if which is not None else installed(),
        script_dir=str(script_dir),
        isdir=lambda path: iterm and path == iterm_dir,
    )


# --------------------------------------------------------------------------------------------
# Linux: each terminal's own convention
# --------------------------------------------------------------------------------------------

LINUX_ARGV: dict[str, list[str]] = {
    "xdg-terminal-exec": ["/usr/bin/xdg-terminal-exec", *CMD],
    "x-terminal-emulator": ["/usr/bin/x-terminal-emulator", "-T", TITLE, "-e", *CMD],
    "gnome-terminal": [
        "/usr/bin/gnome-terminal",
        f"--working-directory={CWD}",
        f"--title={TITLE}",
        "--",
        *CMD,
    ],
    "konsole": ["/usr/bin/konsole", "--separate", "--workdir", CWD, "-e", *CMD],
    "xfce4-terminal": [
        "/usr/bin/xfce4-terminal",
        "--disable-server",
        f"--working-directory={CWD}",
        "-T",
        TITLE,
        "-x",
        *CMD,
    ],
    "kitty": ["/usr/bin/kitty", "--directory", CWD, "--title", TITLE, *CMD],
    "alacritty": [
        "/usr/bin/alacritty",
        "--working-directory",
        CWD,
        "--title",
        TITLE,
        "-e",
        *CMD,
    ],
    "wezterm": ["/usr/bin/wezterm", "start", "--cwd", CWD, "--", *CMD],
    "foot": ["/usr/bin/foot", f"--working-directory={CWD}", f"--title={TITLE}", "--", *CMD],
    "tilix": ["/usr/bin/tilix", "--new-process", "-w", CWD, "-t", TITLE, "-e", JOINED],
    "terminator": [
        "/usr/bin/terminator",
        "-u",
        f"--working-directory={CWD}",
        "-T",
        TITLE,
        "-x",
        *CMD,
    ],
    "lxterminal": [
        "/usr/bin/lxterminal",
        "--no-remote",
        f"--working-directory={CWD}",
        f"--title={TITLE}",
        f"--command={JOINED}",
    ],
    "xterm": ["/usr/bin/xterm", "-T", TITLE, "-e", *CMD],
}


def test_every_known_terminal_has_an_expected_argv() -> None:
    assert set(LINUX_ARGV) == set(POSIX_TERMINALS)


@pytest.mark.parametrize("name", POSIX_TERMINALS)
def test_linux_terminal_argv_when_it_is_the_only_one(name: str) -> None:
    launch = linux(name)
    assert launch.argv == LINUX_ARGV[name]
    assert launch.terminal == name
    assert launch.cwd == CWD
    assert launch.script_path is None
    assert launch.creationflags == 0


@pytest.mark.parametrize("name", POSIX_TERMINALS)
def test_linux_terminal_argv_when_named_among_all(name: str) -> None:
    launch = linux(*POSIX_TERMINALS, preference=name)
    assert launch.argv == LINUX_ARGV[name]
    assert launch.terminal == name


def test_named_preference_is_case_insensitive_and_trimmed() -> None:
    assert linux("kitty", "xterm", preference="  Kitty ").argv == LINUX_ARGV["kitty"]


def test_env_is_base_env_plus_secret() -> None:
    launch = linux("xterm")
    assert launch.env == {**BASE_ENV, KEY: SECRET}


def test_secret_env_overrides_a_stale_value_in_the_base_env() -> None:
    launch = linux("xterm", environ={**BASE_ENV, KEY: "old"})
    assert launch.env[KEY] == SECRET


def test_terminator_gets_no_python_path() -> None:
    environ = {**BASE_ENV, "PYTHONPATH": "/bundle/lib", "PYTHONHOME": "/bundle"}
    launch = linux("terminator", environ=environ)
    assert "PYTHONPATH" not in launch.env
    assert "PYTHONHOME" not in launch.env
    assert launch.env[KEY] == SECRET
    # ...while other terminals keep the environment as it is.
    assert linux("xterm", environ=environ).env["PYTHONPATH"] == "/bundle/lib"


def test_title_control_characters_are_removed() -> None:
    launch = linux("xterm", title="a\x1b]0;evil\x07b\n")
    assert launch.argv[2] == "a]0;evilb"


def test_launch_is_frozen() -> None:
    launch = linux("xterm")
    with pytest.raises(AttributeError):
        launch.terminal = "other"  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# Linux: $TERMINAL
# --------------------------------------------------------------------------------------------


def test_terminal_variable_naming_a_known_terminal_wins_and_uses_its_convention() -> None:
    launch = linux("gnome-terminal", "kitty", environ={**BASE_ENV, "TERMINAL": "kitty"})
    assert launch.argv == LINUX_ARGV["kitty"]
    assert launch.terminal == "kitty"


def test_terminal_variable_with_an_absolute_path() -> None:
    which = which_of({"/opt/kitty/bin/kitty": "/opt/kitty/bin/kitty", "xterm": "/usr/bin/xterm"})
    launch = linux(which=which, environ={**BASE_ENV, "TERMINAL": "/opt/kitty/bin/kitty"})
    assert launch.argv == ["/opt/kitty/bin/kitty", *LINUX_ARGV["kitty"][1:]]


def test_terminal_variable_naming_an_unknown_terminal_uses_dash_e() -> None:
    which = which_of({"myterm": "/usr/local/bin/myterm", "xterm": "/usr/bin/xterm"})
    launch = linux(which=which, environ={**BASE_ENV, "TERMINAL": "myterm"})
    assert launch.argv == ["/usr/local/bin/myterm", "-e", *CMD]
    assert launch.terminal == "myterm"


def test_terminal_variable_with_arguments_unknown() -> None:
    which = which_of({"myterm": "/usr/local/bin/myterm"})
    environ = {**BASE_ENV, "TERMINAL": "myterm --class 'My Class'"}
    launch = linux(which=which, environ=environ)
    assert launch.argv == ["/usr/local/bin/myterm", "--class", "My Class", "-e", *CMD]


def test_terminal_variable_with_arguments_known() -> None:
    environ = {**BASE_ENV, "TERMINAL": "kitty --single-instance"}
    launch = linux("kitty", environ=environ)
    assert launch.argv == ["/usr/bin/kitty", "--single-instance", *LINUX_ARGV["kitty"][1:]]


def test_terminal_variable_not_installed_falls_through() -> None:
    launch = linux("konsole", "xterm", environ={**BASE_ENV, "TERMINAL": "notinstalled"})
    assert launch.argv == LINUX_ARGV["konsole"]


def test_terminal_variable_that_cannot_be_parsed_falls_through() -> None:
    launch = linux("xterm", environ={**BASE_ENV, "TERMINAL": '"unclosed'})
    assert launch.argv == LINUX_ARGV["xterm"]


def test_empty_terminal_variable_is_ignored() -> None:
    launch = linux("xterm", environ={**BASE_ENV, "TERMINAL": "  "})
    assert launch.argv == LINUX_ARGV["xterm"]


def test_terminal_variable_pointing_at_x_terminal_emulator_is_resolved() -> None:
    realpath = links({"/usr/bin/x-terminal-emulator": "/usr/bin/konsole"})
    environ = {**BASE_ENV, "TERMINAL": "x-terminal-emulator"}
    launch = linux("x-terminal-emulator", environ=environ, realpath=realpath)
    assert launch.argv == LINUX_ARGV["konsole"]


def test_named_preference_beats_terminal_variable() -> None:
    launch = linux("kitty", "xterm", preference="xterm", environ={**BASE_ENV, "TERMINAL": "kitty"})
    assert launch.argv == LINUX_ARGV["xterm"]


# --------------------------------------------------------------------------------------------
# Linux: x-terminal-emulator resolution
# --------------------------------------------------------------------------------------------

XTE = "/usr/bin/x-terminal-emulator"


@pytest.mark.parametrize(
    ("target", "name"),
    [
        ("/usr/bin/konsole", "konsole"),
        ("/usr/bin/terminator", "terminator"),
        ("/usr/bin/lxterminal", "lxterminal"),
        ("/usr/lib/kitty/bin/kitty", "kitty"),
        ("/usr/bin/gnome-terminal.real", "gnome-terminal"),
    ],
)
def test_x_terminal_emulator_pointing_at_a_known_terminal_uses_its_convention(
    target: str, name: str
) -> None:
    launch = linux("x-terminal-emulator", realpath=links({XTE: target}))
    assert launch.argv == [target, *LINUX_ARGV[name][1:]]
    assert launch.terminal == name


@pytest.mark.parametrize(
    "target",
    ["/usr/bin/gnome-terminal.wrapper", "/usr/bin/urxvt", XTE],
)
def test_x_terminal_emulator_pointing_elsewhere_uses_dash_t_dash_e(target: str) -> None:
    launch = linux("x-terminal-emulator", realpath=links({XTE: target}))
    assert launch.argv == LINUX_ARGV["x-terminal-emulator"]
    assert launch.terminal == "x-terminal-emulator"


def test_x_terminal_emulator_realpath_failure_is_tolerated() -> None:
    def broken(path: str) -> str:
        raise OSError("loop")

    launch = linux("x-terminal-emulator", realpath=broken)
    assert launch.argv == LINUX_ARGV["x-terminal-emulator"]


# --------------------------------------------------------------------------------------------
# Linux: priority and discovery
# --------------------------------------------------------------------------------------------


def test_priority_order_is_the_documented_one() -> None:
    assert POSIX_TERMINALS == (
        "xdg-terminal-exec",
        "x-terminal-emulator",
        "gnome-terminal",
        "konsole",
        "xfce4-terminal",
        "kitty",
        "alacritty",
        "wezterm",
        "foot",
        "tilix",
        "terminator",
        "lxterminal",
        "xterm",
    )


@pytest.mark.parametrize("index", range(len(POSIX_TERMINALS)))
def test_auto_picks_the_first_installed(index: int) -> None:
    present = POSIX_TERMINALS[index:]
    launch = linux(*reversed(present))
    assert launch.terminal == POSIX_TERMINALS[index]


def test_available_terminals_lists_in_priority_order() -> None:
    found = available_terminals("linux", installed("xterm", "kitty", "gnome-terminal"), BASE_ENV)
    assert found == ["gnome-terminal", "kitty", "xterm"]


def test_available_terminals_puts_terminal_variable_first_and_deduplicates() -> None:
    which = which_of(
        {
            "myterm": "/usr/local/bin/myterm",
            "x-terminal-emulator": XTE,
            "konsole": "/usr/bin/konsole",
            "xterm": "/usr/bin/xterm",
        }
    )
    found = available_terminals(
        "linux",
        which,
        {**BASE_ENV, "TERMINAL": "myterm"},
        realpath=links({XTE: "/usr/bin/konsole"}),
    )
    assert found == ["myterm", "konsole", "xterm"]


def test_available_terminals_when_nothing_is_installed() -> None:
    assert available_terminals("linux", installed(), BASE_ENV) == []


def test_other_unix_platforms_behave_like_linux() -> None:
    launch = build_terminal_launch(
        CMD,
        cwd=CWD,
        title=TITLE,
        secret_env=SECRETS,
        platform="freebsd14",
        environ=BASE_ENV,
        which=installed("xterm"),
    )
    assert launch.argv == LINUX_ARGV["xterm"]


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_named_preference_not_installed() -> None:
    with pytest.raises(NoTerminalError) as info:
        linux("xterm", "konsole", preference="kitty")
    err = info.value
    assert isinstance(err, LaunchError)
    assert err.code == "no_terminal"
    assert "kitty" in err.problem
    assert "not found" in err.problem
    assert "konsole, xterm" in err.fix
    assert "Settings → Terminal" in str(err)


def test_named_preference_not_installed_and_nothing_else_either() -> None:
    with pytest.raises(NoTerminalError) as info:
        linux(preference="kitty")
    assert "kitty" in info.value.problem
    assert "sudo apt install xterm" in info.value.fix
    assert "myterm -e {command}" in info.value.fix


def test_nothing_found_on_linux() -> None:
    with pytest.raises(NoTerminalError) as info:
        linux()
    err = info.value
    assert err.problem == "No terminal program was found."
    assert "Settings → Terminal" in err.fix
    assert "`myterm -e {command}`" in err.fix
    assert "sudo apt install xterm" in err.fix
    assert err.code == "no_terminal"


def test_nothing_found_on_bsd_suggests_no_apt() -> None:
    with pytest.raises(NoTerminalError) as info:
        build_terminal_launch(
            CMD,
            cwd=CWD,
            title=TITLE,
            secret_env=SECRETS,
            platform="openbsd7",
            environ=BASE_ENV,
            which=installed(),
        )
    assert "apt" not in info.value.fix
    assert "myterm -e {command}" in info.value.fix


def test_unknown_name_is_a_launch_error_that_explains_the_template() -> None:
    with pytest.raises(LaunchError) as info:
        linux("xterm", preference="myterm")
    err = info.value
    assert not isinstance(err, NoTerminalError)
    assert "Settings → Terminal" in err.problem
    assert "myterm" in err.problem
    assert "{command}" in err.problem
    assert "myterm -e {command}" in err.fix


def test_empty_command_is_refused() -> None:
    with pytest.raises(LaunchError):
        linux("xterm", command=[])


def test_secret_in_the_command_is_refused() -> None:
    with pytest.raises(LaunchError) as info:
        linux("xterm", command=[OPENCODE, "attach", "-p", SECRET])
    assert KEY in info.value.problem
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("key", ["", "1ABC", "A-B", "A B", "A=B"])
def test_invalid_secret_variable_name_is_refused(key: str) -> None:
    with pytest.raises(LaunchError):
        build_terminal_launch(
            CMD,
            cwd=CWD,
            title=TITLE,
            secret_env={key: "x"},
            platform="linux",
            environ=BASE_ENV,
            which=installed("xterm"),
        )


def test_nul_in_secret_is_refused() -> None:
    with pytest.raises(LaunchError) as info:
        build_terminal_launch(
            CMD,
            cwd=CWD,
            title=TITLE,
            secret_env={KEY: "a\x00b"},
            platform="linux",
            environ=BASE_ENV,
            which=installed("xterm"),
        )
    assert "a\x00b" not in str(info.value)


# --------------------------------------------------------------------------------------------
# Custom templates
# --------------------------------------------------------------------------------------------

MYTERM = which_of({"myterm": "/usr/local/bin/myterm", "sh": "/bin/sh"})


def test_custom_template_splices_the_command() -> None:
    launch = linux(which=MYTERM, preference="myterm -e {command}")
    assert launch.argv == ["/usr/local/bin/myterm", "-e", *CMD]
    assert launch.terminal == "custom"
    assert launch.cwd == CWD
    assert launch.env == {**BASE_ENV, KEY: SECRET}


def test_custom_template_embeds_the_command_as_one_string() -> None:
    launch = linux(which=MYTERM, preference="myterm --run={command}")
    assert launch.argv == ["/usr/local/bin/myterm", f"--run={JOINED}"]


def test_custom_template_embedded_in_a_quoted_shell_snippet() -> None:
    launch = linux(which=MYTERM, preference="myterm -e sh -c '{command}; exec sh'")
    assert launch.argv == ["/usr/local/bin/myterm", "-e", "sh", "-c", f"{JOINED}; exec sh"]
    # The embedded string is valid shell that splits back into the original argv.
    assert shlex.split(launch.argv[-1].removesuffix("; exec sh")) == CMD


def test_custom_template_with_cwd_and_title() -> None:
    template = 'myterm --cwd={cwd} --title "{title}" -d {cwd} -e {command}'
    launch = linux(which=MYTERM, preference=template)
    assert launch.argv == [
        "/usr/local/bin/myterm",
        f"--cwd={CWD}",
        "--title",
        TITLE,
        "-d",
        CWD,
        "-e",
        *CMD,
    ]


def test_custom_template_placeholders_are_not_substituted_twice() -> None:
    launch = build_terminal_launch(
        CMD,
        cwd="/w/{title}",
        title="T",
        secret_env=SECRETS,
        preference="myterm --x={cwd} {command}",
        platform="linux",
        environ=BASE_ENV,
        which=MYTERM,
    )
    assert launch.argv[1] == "--x=/w/{title}"


def test_custom_template_only_command() -> None:
    which = which_of({OPENCODE: OPENCODE})
    launch = linux(which=which, preference="{command}")
    assert launch.argv == CMD


def test_custom_template_without_command_placeholder() -> None:
    with pytest.raises(LaunchError) as info:
        linux("xterm", which=MYTERM, preference="myterm -e")
    assert "Settings → Terminal" in info.value.problem
    assert "{command}" in info.value.problem
    assert "myterm -e {command}" in info.value.fix


def test_custom_template_program_not_installed() -> None:
    with pytest.raises(NoTerminalError) as info:
        linux(which=installed(), preference="ghostterm -e {command}")
    assert "ghostterm" in info.value.problem
    assert "Settings → Terminal" in info.value.problem


def test_custom_template_with_unbalanced_quotes() -> None:
    with pytest.raises(LaunchError) as info:
        linux(which=MYTERM, preference="myterm -e '{command}")
    assert "Settings → Terminal" in info.value.problem


def test_custom_template_on_windows_keeps_backslashes() -> None:
    term = r"C:\Program Files\My Term\term.exe"
    launch = build_terminal_launch(
        WIN_CMD,
        cwd=WIN_CWD,
        title="T",
        secret_env=SECRETS,
        preference=f'"{term}" --cwd {{cwd}} --run={{command}} -e {{command}}',
        platform="win32",
        environ={},
        which=which_of({term: term}),
    )
    assert launch.argv == [
        term,
        "--cwd",
        WIN_CWD,
        f"--run={subprocess.list2cmdline(WIN_CMD)}",
        "-e",
        *WIN_CMD,
    ]
    assert launch.creationflags == 0


# --------------------------------------------------------------------------------------------
# macOS
# --------------------------------------------------------------------------------------------


def test_macos_terminal_app(tmp_path: Path) -> None:
    launch = mac(tmp_path)
    assert launch.terminal == "Terminal.app"
    assert launch.script_path is not None
    script = Path(launch.script_path)
    assert launch.argv == ["open", "-a", "Terminal", str(script)]
    assert script.parent == tmp_path
    assert script.name.endswith(".command")
    assert stat.S_IMODE(script.stat().st_mode) == 0o700
    assert launch.env == {**BASE_ENV, KEY: SECRET}
    assert launch.cwd == CWD

    text = script.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == "#!/bin/sh"
    export = f"export {KEY}={shlex.quote(SECRET)}"
    assert export in lines
    assert 'rm -f "$0"' in lines
    assert lines.index('rm -f "$0"') < lines.index(export)  # deleted before anything runs
    assert f"cd {shlex.quote(CWD)} || exit 1" in lines
    assert lines[-1] == f"exec {JOINED}"
    assert text == launcher_script_text(CMD, CWD, TITLE, SECRETS)


@pytest.mark.parametrize("preference", ["Terminal", "terminal.app", "auto", ""])
def test_macos_terminal_app_names(tmp_path: Path, preference: str) -> None:
    assert mac(tmp_path, preference).argv[:3] == ["open", "-a", "Terminal"]


@pytest.mark.parametrize("preference", ["iterm", "iTerm2", "ITERM.APP"])
def test_macos_iterm(tmp_path: Path, preference: str) -> None:
    launch = mac(tmp_path, preference, iterm=True)
    assert launch.terminal == "iTerm2"
    assert launch.script_path is not None
    script = Path(launch.script_path)
    assert script.name.endswith(".sh")
    assert stat.S_IMODE(script.stat().st_mode) == 0o700
    assert launch.argv == [
        "osascript",
        "-e",
        f'tell application "iTerm" to create window with default profile command "{script}"',
    ]
    assert f"export {KEY}={shlex.quote(SECRET)}" in script.read_text(encoding="utf-8")


def test_macos_iterm_path_is_quoted_for_the_shell_and_applescript(tmp_path: Path) -> None:
    odd = tmp_path / 'dir with "quote" and \\'
    odd.mkdir()
    launch = mac(odd, "iterm", iterm=True)
    assert launch.script_path is not None
    shell = shlex.quote(launch.script_path)
    literal = '"' + shell.replace("\\", "\\\\").replace('"', '\\"') + '"'
    assert launch.argv[2] == (
        f'tell application "iTerm" to create window with default profile command {literal}'
    )


def test_macos_iterm_not_installed(tmp_path: Path) -> None:
    with pytest.raises(NoTerminalError) as info:
        mac(tmp_path, "iterm", iterm=False)
    assert "iTerm2" in info.value.problem
    assert "Terminal.app" in info.value.fix
    assert list(tmp_path.iterdir()) == []  # no script left behind


def test_macos_available_terminals() -> None:
    assert available_terminals("darwin", installed(), BASE_ENV, isdir=lambda p: False) == [
        "Terminal.app"
    ]
    home_iterm = "/home/u/Applications/iTerm.app"
    found = available_terminals(
        "darwin", installed("kitty"), BASE_ENV, isdir=lambda p: p == home_iterm
    )
    assert found == ["Terminal.app", "iTerm2", "kitty"]


def test_macos_named_unix_terminal_uses_its_convention_and_no_script(tmp_path: Path) -> None:
    launch = mac(tmp_path, "kitty", which=installed("kitty"))
    assert launch.argv == LINUX_ARGV["kitty"]
    assert launch.script_path is None
    assert list(tmp_path.iterdir()) == []


def test_macos_scripts_are_unique(tmp_path: Path) -> None:
    first, second = mac(tmp_path), mac(tmp_path)
    assert first.script_path != second.script_path
    assert len(list(tmp_path.iterdir())) == 2


def test_macos_script_dir_missing(tmp_path: Path) -> None:
    with pytest.raises(LaunchError) as info:
        mac(tmp_path / "missing")
    assert str(tmp_path / "missing") in info.value.problem
    assert SECRET not in str(info.value)


def test_macos_script_is_valid_sh(tmp_path: Path) -> None:
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no sh")
    launch = mac(tmp_path)
    assert launch.script_path is not None
    subprocess.run([sh, "-n", launch.script_path], check=True)


TRICKY_SECRETS = [
    SECRET,
    "it's",
    "'",
    "''",
    '"$(touch /tmp/pwned)"',
    "$(touch pwned) `touch pwned2` ${HOME}",
    "line1\nline2\n",
    "tab\tand trailing space ",
    "back\\slash\\",
    "ünïcødé ✓",
    "-n",
    "",
]


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh")
@pytest.mark.parametrize("secret", TRICKY_SECRETS)
def test_macos_script_round_trips_the_secret_and_cwd(tmp_path: Path, secret: str) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    workspace = tmp_path / "work space $x 'q'"
    workspace.mkdir()
    launch = mac(scripts, cwd=str(workspace), secret_env={KEY: secret, "SECOND": "2 'two'"})
    assert launch.script_path is not None
    assert secret == "" or all(secret not in arg for arg in launch.argv)

    # Run a copy whose final exec reports what the program would have seen.
    text = Path(launch.script_path).read_text(encoding="utf-8")
    head, last = text.rstrip("\n").rsplit("\n", 1)
    assert last.startswith("exec ")
    copy = tmp_path / "copy.command"
    copy.write_text(
        head + '\nprintf "%s" "$' + KEY + '" > "$OUT_SECRET"\n'
        'printf "%s" "$SECOND" > "$OUT_SECOND"\npwd -P > "$OUT_PWD"\n',
        encoding="utf-8",
    )
    out = {name: tmp_path / name for name in ("secret", "second", "pwd")}
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "OUT_SECRET": str(out["secret"]),
        "OUT_SECOND": str(out["second"]),
        "OUT_PWD": str(out["pwd"]),
    }
    sh = shutil.which("sh")
    assert sh is not None
    subprocess.run([sh, str(copy)], check=True, env=env, cwd=tmp_path, capture_output=True)

    assert out["secret"].read_bytes().decode("utf-8") == secret
    assert out["second"].read_text(encoding="utf-8") == "2 'two'"
    assert out["pwd"].read_text(encoding="utf-8").rstrip("\n") == str(workspace.resolve())
    assert not copy.exists()  # the script removed itself
    assert not (tmp_path / "pwned").exists()
    assert not (workspace / "pwned").exists()


# --------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------


def test_windows_terminal_argv_escapes_semicolons() -> None:
    launch = windows("wt", "pwsh", "cmd", title="OpenCode; a;b")
    assert launch.argv == [
        WIN_PATHS["wt"],
        "-w",
        "new",
        "new-tab",
        "-d",
        r"C:\Users\Jo Smith\a\;b",
        "--title",
        r"OpenCode\; a\;b",
        "--",
        WIN_OPENCODE,
        "attach",
        "http://127.0.0.1:3795",
        "--dir",
        r"C:\Users\Jo Smith\a\;b",
    ]
    assert launch.terminal == "wt"
    assert launch.creationflags == 0
    assert launch.cwd == WIN_CWD


def test_powershell_argv_and_quoting() -> None:
    launch = windows("pwsh", "powershell", "cmd", title="It's mine")
    assert launch.argv == [
        WIN_PATHS["pwsh"],
        "-NoExit",
        "-Command",
        "$Host.UI.RawUI.WindowTitle = 'It''s mine'; "
        r"& 'C:\Program Files\opencode\opencode.exe' 'attach' 'http://127.0.0.1:3795' "
        r"'--dir' 'C:\Users\Jo Smith\a;b'",
    ]
    assert launch.terminal == "pwsh"
    assert launch.creationflags == CREATE_NEW_CONSOLE == 0x10


def test_powershell_doubles_every_kind_of_single_quote() -> None:
    launch = build_terminal_launch(
        ["C:\\it's\u2019\\x.exe", "a\u2018b"],
        cwd="C:\\",
        title="",
        secret_env=SECRETS,
        platform="win32",
        environ={},
        which=which_of({"powershell": WIN_PATHS["powershell"]}),
    )
    assert launch.argv[-1] == "& 'C:\\it''s\u2019\u2019\\x.exe' 'a\u2018\u2018b'"


def test_powershell_preference_falls_back_to_windows_powershell() -> None:
    launch = windows("wt", "powershell", "cmd", preference="powershell")
    assert launch.argv[0] == WIN_PATHS["powershell"]
    assert launch.terminal == "powershell"
    assert launch.creationflags == CREATE_NEW_CONSOLE


def test_powershell_preference_prefers_pwsh() -> None:
    assert windows("pwsh", "powershell", preference="PowerShell").terminal == "pwsh"


def test_pwsh_preference_without_pwsh() -> None:
    with pytest.raises(NoTerminalError) as info:
        windows("powershell", "cmd", preference="pwsh")
    assert "pwsh" in info.value.problem
    assert "powershell, cmd" in info.value.fix


def test_cmd_argv_and_command_line() -> None:
    launch = build_terminal_launch(
        [WIN_OPENCODE, "attach", "http://127.0.0.1:3795", "--dir", r"C:\R&D\100%(x)^"],
        cwd="C:\\",
        title='My "title" & <more>',
        secret_env=SECRETS,
        preference="cmd",
        platform="win32",
        environ={},
        which=which_of(WIN_PATHS),
    )
    assert launch.argv == [
        WIN_PATHS["cmd"],
        "/k",
        "title",
        "My",
        "title",
        "more",
        "&",
        WIN_OPENCODE,
        "attach",
        "http://127.0.0.1:3795",
        "--dir",
        r"C:\R^&D\100^%^(x^)^^",
    ]
    assert launch.terminal == "cmd"
    assert launch.creationflags == CREATE_NEW_CONSOLE
    # What cmd.exe receives: the line after /k does not start with a quote, so cmd keeps the
    # quotes around the program path (its "strip first and last quote" rule does not apply).
    assert subprocess.list2cmdline(launch.argv) == (
        r"C:\Windows\System32\cmd.exe /k title My title more & "
        r'"C:\Program Files\opencode\opencode.exe" attach http://127.0.0.1:3795 '
        r"--dir C:\R^&D\100^%^(x^)^^"
    )


def test_cmd_leaves_arguments_with_spaces_to_the_quotes() -> None:
    launch = windows("cmd", preference="cmd.exe", title="")
    assert launch.argv == [WIN_PATHS["cmd"], "/k", "title", "opencode", "&", *WIN_CMD]


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (("wt", "pwsh", "powershell", "cmd"), "wt"),
        (("pwsh", "powershell", "cmd"), "pwsh"),
        (("powershell", "cmd"), "powershell"),
        (("cmd",), "cmd"),
    ],
)
def test_windows_auto_order(names: tuple[str, ...], expected: str) -> None:
    assert windows(*names).terminal == expected


def test_windows_available_terminals() -> None:
    found = available_terminals("win32", which_of(WIN_PATHS), {})
    assert found == ["wt", "pwsh", "powershell", "cmd"]


def test_windows_nothing_found() -> None:
    with pytest.raises(NoTerminalError) as info:
        windows()
    assert info.value.problem == "No terminal program was found."
    assert "apt" not in info.value.fix
    assert "Settings → Terminal" in info.value.fix


def test_windows_unix_terminal_name_is_explained() -> None:
    with pytest.raises(LaunchError) as info:
        windows("cmd", preference="kitty")
    assert "kitty" in info.value.problem
    assert "wt" in info.value.fix


def test_windows_named_missing() -> None:
    with pytest.raises(NoTerminalError) as info:
        windows("cmd", preference="wt")
    assert "“wt”" in info.value.problem
    assert "cmd" in info.value.fix


# --------------------------------------------------------------------------------------------
# The secret never reaches argv, for every terminal
# --------------------------------------------------------------------------------------------

EVERY_TERMINAL: list[tuple[str, str, tuple[str, ...]]] = [
    *[("linux", name, (name,)) for name in POSIX_TERMINALS],
    ("linux", "auto", POSIX_TERMINALS),
    ("linux", "myterm -e {command}", ("myterm",)),
    ("linux", "myterm --run={command} --title={title}", ("myterm",)),
    ("darwin", "auto", ()),
    ("darwin", "iterm", ()),
    ("darwin", "wezterm", ("wezterm",)),
    ("win32", "wt", ("wt",)),
    ("win32", "pwsh", ("pwsh",)),
    ("win32", "powershell", ("powershell",)),
    ("win32", "cmd", ("cmd",)),
    ("win32", "auto", ("wt", "cmd")),
    ("win32", "myterm -e {command}", ("myterm",)),
]


@pytest.mark.parametrize(("platform", "preference", "names"), EVERY_TERMINAL)
def test_secret_is_only_in_env(
    tmp_path: Path, platform: str, preference: str, names: tuple[str, ...]
) -> None:
    environ = dict(BASE_ENV)
    before = dict(environ)
    os_environ_before = dict(os.environ)
    secret_env = {KEY: SECRET, "OTHER_TOKEN": "tok-0123456789"}
    launch = build_terminal_launch(
        CMD,
        cwd=CWD,
        title=TITLE,
        secret_env=secret_env,
        preference=preference,
        platform=platform,
        environ=environ,
        which=which_of({name: f"/usr/bin/{name}" for name in names}),
        script_dir=str(tmp_path),
        isdir=lambda path: True,
    )
    for value in secret_env.values():
        assert all(value not in arg for arg in launch.argv)
    assert launch.env[KEY] == SECRET
    assert launch.env["OTHER_TOKEN"] == "tok-0123456789"
    assert launch.env["LANG"] == "C.UTF-8"
    assert environ == before  # the base env is copied, never changed
    assert dict(os.environ) == os_environ_before
    assert KEY not in os.environ or os.environ[KEY] != SECRET


def test_environ_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMARTSPEC_TEST_MARKER", "present")
    monkeypatch.delenv(KEY, raising=False)
    launch = build_terminal_launch(
        CMD,
        cwd=CWD,
        title=TITLE,
        secret_env=SECRETS,
        platform="linux",
        which=installed("xterm"),
    )
    assert launch.env["SMARTSPEC_TEST_MARKER"] == "present"
    assert launch.env[KEY] == SECRET
    assert KEY not in os.environ
