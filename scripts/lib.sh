# Shared by scripts/setup-app and scripts/setup-tests (sourced, not run). Bash only.
#
# Works from a stock Debian 12 / Ubuntu 24.04 (only /usr/bin/python3, PEP 668 in force, maybe not
# root) as well as from a pyenv or conda Python: the package always goes into its own virtual
# environment, never into a system or user site.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SMARTSPEC_VENV:-$ROOT/.venv}"
VPY="$VENV/bin/python"
# The tests' own caches (OpenCode for the tests, npm's cache for the offline install test). Never
# the app's install and never the user's ~/.npm.
TESTS_CACHE="${SMARTSPEC_TESTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/smartspec-desktop-tests}"
# = PINNED_VERSION in smartspec_desktop/core/opencode.py (a unit test keeps them equal).
OPENCODE_VERSION=1.18.33

say() { echo "setup: $*"; }
die() {
  echo "setup: error: $*" >&2
  exit 1
}

_apt_updated=""
_sudo() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "root rights are needed to run: $* (install sudo, or run this script as root)"
  fi
}

# apt_ensure SPEC... — each SPEC is a package name or alternatives "new-name|old-name" (Ubuntu
# 24.04 renamed some libraries, e.g. libglib2.0-0t64). Installs only what is missing, so a second
# run needs neither the network nor sudo.
apt_ensure() {
  local spec alt installed missing=() pick
  for spec in "$@"; do
    installed=""
    for alt in ${spec//|/ }; do
      if dpkg-query -W -f='${Status}' "$alt" 2>/dev/null | grep -q "install ok installed"; then
        installed=1
        break
      fi
    done
    [ -n "$installed" ] || missing+=("$spec")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  if [ -z "$_apt_updated" ]; then
    say "apt-get update"
    _sudo apt-get update -qq
    _apt_updated=1
  fi
  local names=()
  for spec in "${missing[@]}"; do
    pick=""
    for alt in ${spec//|/ }; do
      if apt-cache show --no-all-versions "$alt" >/dev/null 2>&1; then
        pick="$alt"
        break
      fi
    done
    names+=("${pick:-${spec%%|*}}")
  done
  say "installing with apt: ${names[*]}"
  _sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${names[@]}" >/dev/null
}

have_apt() { command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1; }

# Qt (PySide6) at run time: GL/EGL, fonts, keyboard, D-Bus, the xcb platform plugin.
QT_APT_PACKAGES=(
  libgl1 libegl1 libopengl0 libfontconfig1 libfreetype6 libxkbcommon0 libxkbcommon-x11-0
  "libdbus-1-3" "libglib2.0-0t64|libglib2.0-0" libxcb-cursor0 libxcb-icccm4 libxcb-image0
  libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1
  libxcb-xfixes0 libxrender1 libx11-xcb1 fonts-dejavu-core
)

# The Python the virtual environment is made from: $SMARTSPEC_PYTHON, else `python3` on PATH
# (pyenv, conda, the system's), else /usr/bin/python3. 3.10 or newer.
pick_python() {
  local c
  for c in "${SMARTSPEC_PYTHON:-}" python3 /usr/bin/python3 python; do
    [ -n "$c" ] || continue
    command -v "$c" >/dev/null 2>&1 || continue
    if "$c" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
      command -v "$c"
      return 0
    fi
  done
  die "Python 3.10 or newer is needed (Debian/Ubuntu: sudo apt-get install python3)"
}

# ensure_venv: $VENV exists and works; creates it. A stock Debian/Ubuntu Python cannot until apt's
# python3.X-venv is installed (`python3 -m venv` fails: "ensurepip is not available"): then that
# is installed and the venv made again.
ensure_venv() {
  if [ -x "$VPY" ] && "$VPY" -c 'import sys, pip; sys.exit(sys.prefix == sys.base_prefix)' 2>/dev/null; then
    return 0
  fi
  local py ver
  py="$(pick_python)"
  rm -rf "$VENV"
  say "creating the virtual environment $VENV (from $py)"
  if "$py" -m venv "$VENV" 2>/dev/null; then
    return 0
  fi
  have_apt || die "$py cannot create a virtual environment; install its venv module (ensurepip)"
  ver="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  apt_ensure "python$ver-venv|python3-venv"
  rm -rf "$VENV"
  "$py" -m venv "$VENV"
}

# pip_sync LOCKFILE: install the hashed lock into the venv (only when it changed since the last
# run), then this package itself, editable, with the lock's setuptools (no download).
pip_sync() {
  local lock="$ROOT/$1" stamp sum
  stamp="$VENV/.smartspec-$(basename "$1" .txt).sha256"
  sum="$(cat "$lock" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ]; then
    return 0
  fi
  say "installing $1 into $VENV"
  "$VPY" -m pip install -q --disable-pip-version-check --require-hashes -r "$lock"
  "$VPY" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$ROOT"
  echo "$sum" >"$stamp"
}

ensure_npm() {
  command -v npm >/dev/null 2>&1 && return 0
  have_apt || die "npm is needed to install OpenCode: install Node.js (it includes npm)"
  apt_ensure nodejs npm
}
