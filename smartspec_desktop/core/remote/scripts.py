"""The small POSIX ``sh`` scripts this app runs on a remote host (through :mod:`.ssh`).

Each is passed as ``sh -c '<script>' smartspec ARGS…`` (no single quote inside, no secret in
the script or its arguments: remote users can read argv). What each prints is parsed by
:mod:`.engine`; every script works with dash, bash and busybox sh, and needs only coreutils.

* :data:`PROBE` — does the folder exist, and which OpenCode is there (the app's remote install
  folder first, then ``PATH``), with its version.
* :data:`SERVE` — the wrapper of the remote server: reads the server's environment from stdin
  (``NAME=value`` lines up to an empty line; ``@models=<json>`` is written to a 0600 file given
  as ``OPENCODE_CONFIG``), starts ``opencode serve`` on the remote's loopback in the folder (its
  own session, so its whole tree can be killed), prints its identity
  (``[smartspec remote] pid=N start=T``: T is field 22 of ``/proc/N/stat``), then keeps reading
  stdin: when the channel closes (the app's supervisor stopped, ssh was killed, the connection
  was lost) it kills the server. **Disconnect = stop.** Its private run folder (0700: the
  models file, the server's temp files) is removed on exit. Every ``$6`` seconds (0: never) it
  samples the server's process tree from ``/proc`` (one ``cat`` and one ``awk``: the server and
  its descendants, by parent pid) and prints ``[smartspec remote] usage pid=P procs=N
  rss_kb=R ticks=T up=U hz=H every=S``: resident memory, CPU ticks so far, the host's uptime
  and clock rate, from which the supervisor computes the CPU share (see :data:`USAGE_AWK`).
* :data:`KILL` — kills a server recorded by pid and start time, and only when it is provably
  ours: the same start time and ``SMARTSPEC_SERVER_ID=<id>`` in its environment.
* :data:`INSTALL` — ``npm install opencode-ai@VERSION`` into the remote install folder, with
  npm's progress lines.
"""

from __future__ import annotations

#: The remote install folder (relative to the remote's XDG data dir), like the local one.
REMOTE_INSTALL = "smartspec-desktop/opencode"
REMOTE_OPENCODE = REMOTE_INSTALL + "/node_modules/.bin/opencode"
#: The prefix of the wrapper's own output lines (in the server log).
MARK = "[smartspec remote]"

_DATA = '"${XDG_DATA_HOME:-$HOME/.local/share}"'

# $1 = folder, $2 = the key (path:inode:mtime:size) of the binary whose version the app knows
# (`opencode --version` takes seconds). Prints "dir yes|no", one "oc<TAB>path<TAB>version<TAB>
# key" line per OpenCode found (version "=" when the key matched: then it stops there),
# "npm yes|no".
PROBE = f"""
if [ -d "$1" ]; then echo "dir yes"; else echo "dir no"; fi
for oc in {_DATA}/{REMOTE_OPENCODE} "$(command -v opencode 2>/dev/null)"; do
  if [ -n "$oc" ] && [ -x "$oc" ]; then
    k="$oc:$(stat -L -c %i:%Y:%s "$oc" 2>/dev/null)"
    if [ -n "$2" ] && [ "$k" = "$2" ]; then
      printf "oc\\t%s\\t=\\t%s\\n" "$oc" "$k"
      break
    fi
    v=$("$oc" --version 2>/dev/null | head -n 1)
    printf "oc\\t%s\\t%s\\t%s\\n" "$oc" "$v" "$k"
  fi
done
if command -v npm >/dev/null 2>&1; then echo "npm yes"; else echo "npm no"; fi
"""

# The tree of pid r from every /proc/PID/stat line (fields counted after the command name, which
# may hold spaces and parentheses: everything up to its last ") " goes), summed: resident pages
# (field 24) and user+system ticks (14, 15). No single quote (see sh_command).
USAGE_AWK = r"""
{
  s = $0
  sub(/^.*\) /, "", s)
  if (split(s, f, " ") < 22) next
  pid = $1 + 0
  pp[pid] = f[2] + 0
  tk[pid] = f[12] + f[13]
  rs[pid] = f[22] + 0
}
END {
  root = r + 0
  if (!(root in pp)) exit
  mine[root] = 1
  do {
    c = 0
    for (q in pp) if (!(q in mine) && (pp[q] in mine)) { mine[q] = 1; c = 1 }
  } while (c)
  for (q in mine) { n++; t += tk[q]; m += rs[q] }
  printf "%s usage pid=%d procs=%d rss_kb=%.0f ticks=%.0f up=%s hz=%s every=%s\n",
    mark, root, n, m * pg / 1024, t, up, hz, every
}
"""

# $1 = folder, $2 = remote server port, $3 = reverse-forwarded broker port, $4 = opencode,
# $5 = server id, $6 = seconds between two samples of its process tree (0: none).
SERVE = f"""
umask 077
usage_awk=$(cat <<"AWK"
{USAGE_AWK}
AWK
)
run="${{XDG_STATE_HOME:-$HOME/.local/state}}/smartspec-desktop/run/$5"
mkdir -p "$run/tmp" || exit 90
chmod 700 "$run"
u=
trap "[ -z \\"\\$u\\" ] || kill \\$u 2>/dev/null; rm -rf \\"$run\\"" EXIT
trap "exit 143" TERM HUP INT
trap "" PIPE
while IFS= read -r line; do
  [ -z "$line" ] && break
  n=${{line%%=*}}
  v=${{line#*=}}
  case "$n" in
    @models) printf "%s\\n" "$v" > "$run/models.json"; export OPENCODE_CONFIG="$run/models.json";;
    OPENCODE_*|SMARTSPEC_BROKER_TOKEN|SMARTSPEC_SERVER_ID) export "$n=$v";;
  esac
done
if [ -z "$OPENCODE_SERVER_PASSWORD" ] || [ -z "$SMARTSPEC_BROKER_TOKEN" ]; then
  echo "{MARK} the server settings did not arrive over the connection" >&2
  exit 91
fi
export SMARTSPEC_BROKER_URL="http://127.0.0.1:$3/v1/opencode"
export TMPDIR="$run/tmp" TMP="$run/tmp" TEMP="$run/tmp"
for x in {_DATA}/opencode "${{XDG_STATE_HOME:-$HOME/.local/state}}/opencode" \\
    "${{XDG_CACHE_HOME:-$HOME/.cache}}/opencode"; do
  mkdir -p "$x" && chmod 700 "$x"
done
cd "$1" || {{ echo "{MARK} cannot enter the folder $1" >&2; exit 92; }}
exec 3<&0
if command -v setsid >/dev/null 2>&1; then
  setsid "$4" serve --hostname 127.0.0.1 --port "$2" --print-logs --log-level INFO </dev/null 2>&1 &
else
  "$4" serve --hostname 127.0.0.1 --port "$2" --print-logs --log-level INFO </dev/null 2>&1 &
fi
p=$!
st=$(cut -d " " -f 22 "/proc/$p/stat" 2>/dev/null)
echo "{MARK} pid=$p start=$st"
if [ -n "$st" ] && [ "${{6:-0}}" != 0 ]; then
  (
    hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
    pg=$(getconf PAGESIZE 2>/dev/null || echo 4096)
    while [ "$(cut -d " " -f 22 "/proc/$p/stat" 2>/dev/null)" = "$st" ]; do
      read -r up rest < /proc/uptime
      cat /proc/[0-9]*/stat 2>/dev/null | awk -v r="$p" -v pg="$pg" -v hz="$hz" \\
        -v up="$up" -v every="$6" -v mark="{MARK}" "$usage_awk"
      sleep "$6" </dev/null >/dev/null 2>&1
    done
  ) </dev/null &
  u=$!
fi
(
  cat <&3 >/dev/null 2>&1
  if [ -n "$st" ] && [ "$(cut -d " " -f 22 "/proc/$p/stat" 2>/dev/null)" = "$st" ]; then
    # (no output here: the channel is gone, a write would end this shell by SIGPIPE)
    kill -TERM "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null
  fi
) 3<&3 &
w=$!
exec 3<&-
wait "$p"
c=$?
kill "$w" $u 2>/dev/null
exit "$c"
"""

# $1 = pid, $2 = start time, $3 = server id. Prints "gone", "not-ours", "stopped" or "killed".
KILL = """
same() { [ "$(cut -d " " -f 22 "/proc/$1/stat" 2>/dev/null)" = "$2" ]; }
if ! same "$1" "$2"; then echo gone; exit 0; fi
if ! tr "\\0" "\\n" < "/proc/$1/environ" 2>/dev/null | grep -qx "SMARTSPEC_SERVER_ID=$3"; then
  echo not-ours; exit 0
fi
if [ "$(cut -d " " -f 5 "/proc/$1/stat")" = "$1" ]; then g="-$1"; else g="$1"; fi
kill -TERM "$g" 2>/dev/null
i=0
while [ $i -lt 50 ] && same "$1" "$2"; do sleep 0.1; i=$((i + 1)); done
if same "$1" "$2"; then kill -KILL "$g" 2>/dev/null; echo killed; else echo stopped; fi
"""

# $1 = version. npm's output streams; the last line is the installed version.
INSTALL = f"""
if ! command -v npm >/dev/null 2>&1; then echo "{MARK} no npm" >&2; exit 93; fi
umask 077
d={_DATA}/{REMOTE_INSTALL}
mkdir -p "$d" && chmod 700 "$d" || exit 94
echo "{MARK} installing opencode-ai@$1 into $d"
npm install --prefix "$d" --no-audit --no-fund --no-save --loglevel http "opencode-ai@$1" 2>&1 \\
  || exit 95
printf "{MARK} installed %s %s\\n" "$d/node_modules/.bin/opencode" \\
  "$("$d/node_modules/.bin/opencode" --version 2>/dev/null | head -n 1)"
"""

# $1 = folder. What the folder would have OpenCode load (core/servers/trust.py, for the trust
# banner): the same folders (the workspace, and up to its git root, never the home folder or
# /) and the same files as for a local folder. Prints NUL-separated fields (no file name can
# hold a NUL, so none can forge a record): "ws" PATH (the folder, symlinks resolved), then
# "plugin"|"tool"|"prompt" PATH, "config" PATH BASE64 (its first MB, as base64). File names are
# only ever printed, as printf's arguments: nothing in the folder is run or evaluated. Prints
# "nodir" when the folder cannot be entered.
PROJECT = r"""
out() { printf "%s\0" "$@"; }
cd -- "$1" 2>/dev/null || { out nodir; exit 0; }
ws=$(pwd -P && printf x) || exit 0
ws=${ws%?x}
home=$(cd 2>/dev/null && pwd -P && printf x)
home=${home%?x}
out ws "$ws"
top=$ws
d=$ws
while :; do
  if [ -e "$d/.git" ]; then top=$d; break; fi
  up=${d%/*}
  [ -n "$up" ] || up=/
  if [ "$up" = "$d" ] || [ "$up" = "$home" ] || [ "$up" = / ]; then top=$ws; break; fi
  d=$up
done
d=$ws
while :; do
  o=$d/.opencode
  for k in plugin tool; do
    for f in "$o/$k"/*.js "$o/$k"/*.ts "$o/${k}s"/*.js "$o/${k}s"/*.ts; do
      [ -f "$f" ] && out "$k" "$f"
    done
  done
  for s in agent agents command commands; do
    [ -d "$o/$s" ] && find "$o/$s" -type f -name "*.md" -exec printf "prompt\0%s\0" {} \;
  done
  for f in "$o/mode"/*.md "$o/modes"/*.md "$d/AGENTS.md" "$d/CLAUDE.md" "$d/CONTEXT.md"; do
    [ -f "$f" ] && out prompt "$f"
  done
  for f in "$o/opencode.jsonc" "$o/opencode.json" "$d/opencode.jsonc" "$d/opencode.json"; do
    [ -f "$f" ] && out config "$f" "$(head -c 1000000 -- "$f" 2>/dev/null | base64 | tr -d "\n")"
  done
  [ "$d" = "$top" ] && break
  d=${d%/*}
done
"""

# Undo/redo in a plain (non-git) remote folder (issue 15): read and write the files a turn
# touched. The names come from the agent's tool calls (untrusted): they arrive as arguments,
# never inside the script; the app passes only relative names without "." or ".." parts.
# SAFE fails when a part of the name below the folder is a symbolic link (nothing is read or
# written through a link, so nothing outside the folder).
_SAFE = """
safe() {
  p=.
  o=$IFS
  IFS=/
  for c in $1; do
    p="$p/$c"
    if [ -L "$p" ]; then IFS=$o; return 1; fi
  done
  IFS=$o
  return 0
}
"""

# $1 = the workspace folder, $2… = relative names. For each, in order, one line: "none"
# (absent), "link" (a part is a symbolic link), "other" (not a regular file) or "file" followed
# by the content in base64 and a line ".".
READ_FILES = (
    _SAFE
    + f"""
set -f
cd "$1" 2>/dev/null || {{ echo "{MARK} cannot enter the folder $1" >&2; exit 96; }}
shift
for rel in "$@"; do
  t="./$rel"
  if ! safe "$rel"; then echo link
  elif [ ! -e "$t" ]; then echo none
  elif [ -f "$t" ]; then
    echo file
    base64 < "$t" || exit 97
    echo .
  else echo other
  fi
done
"""
)

# $1 = the workspace folder, then pairs: "w" NAME (its new content comes on stdin as base64
# lines ended by a line ".", in the order of the pairs) or "d" NAME (remove it). Every name is
# checked first (no link, a regular file or absent): if one fails, nothing is written and it
# prints "refused N" (N = the pair's 0-based index), exit 3. A file is written to a new
# temporary file next to it (created exclusively), given the old file's mode, then moved over.
WRITE_FILES = (
    _SAFE
    + f"""
set -f
cd "$1" 2>/dev/null || {{ echo "{MARK} cannot enter the folder $1" >&2; exit 96; }}
shift
i=0
n=$#
while [ $i -lt $n ]; do
  rel=$2
  t="./$rel"
  if ! safe "$rel" || {{ [ -e "$t" ] && [ ! -f "$t" ]; }}; then
    echo "refused $((i / 2))"
    exit 3
  fi
  set -- "$@" "$1" "$2"
  shift 2
  i=$((i + 2))
done
i=0
while [ $# -ge 2 ]; do
  op=$1
  rel=$2
  shift 2
  t="./$rel"
  if [ "$op" = d ]; then
    rm -f "$t" || exit 98
  else
    d=${{t%/*}}
    b=${{t##*/}}
    mkdir -p "$d" || exit 98
    if ! safe "$rel"; then echo "refused $i"; exit 3; fi
    tmp="$d/.$b.smartspec-tmp"
    rm -f "$tmp"
    (
      set -C
      while IFS= read -r l; do [ "$l" = . ] && break; printf "%s\\n" "$l"; done \\
        | base64 -d > "$tmp"
    ) || {{ rm -f "$tmp"; exit 98; }}
    if [ -f "$t" ]; then chmod "$(stat -c %a "$t")" "$tmp" 2>/dev/null; fi
    mv -f "$tmp" "$t" || {{ rm -f "$tmp"; exit 98; }}
  fi
  i=$((i + 1))
done
echo done
"""
)

# Worktrees of a remote repository (issue 15): git and a few file operations on the host.
# $1 = the folder to run git in, $2… = git's arguments (exit 201: no such folder, 202: no git).
GIT = """
cd "$1" 2>/dev/null || exit 201
shift
command -v git >/dev/null 2>&1 || exit 202
export GIT_TERMINAL_PROMPT=0 LC_ALL=C GIT_EDITOR=true
exec git "$@"
"""

# $1 = operation, $2 = a path (absolute; made by the app from checked names), $3… = more.
# isdir/exists print yes|no; names lists a folder; base makes the app's worktree folder on the
# host (0700) and prints its physical path; rmtree removes a tree (never following links);
# lines prints the total number of lines of the regular, non-link files among $3… (relative to
# the folder $2) that hold no NUL byte.
FS = f"""
case "$1" in
  isdir) if [ -d "$2" ]; then echo yes; else echo no; fi;;
  exists) if [ -e "$2" ] || [ -L "$2" ]; then echo yes; else echo no; fi;;
  names) if [ -d "$2" ]; then ls -A "$2"; fi;;
  base)
    d={_DATA}/smartspec-desktop/worktrees
    (umask 077 && mkdir -p "$d") && cd -P "$d" && pwd -P;;
  rmtree) rm -rf -- "$2";;
  lines)
    cd "$2" || exit 201
    shift 2
    n=0
    for f in "$@"; do
      if [ -f "$f" ] && [ ! -L "$f" ] && tr -d "\\000" < "$f" | cmp -s - "$f"; then
        n=$((n + $(wc -l < "$f")))
      fi
    done
    echo "$n";;
  *) exit 2;;
esac
"""
