"""Scripts the attacker (another local user, see conftest.py) runs: standard library only, run
with the system Python. Each prints one JSON object per line: ``{"event": ..., ...}``."""

from __future__ import annotations

#: Watches every process's argv until SIGTERM: reads every file named on one (``file://`` URLs
#: included) and fetches every loopback URL on one. For each loopback port it is pointed at (one
#: number a line in ``targets`` in its home: the test names the hand-off's port, so that the
#: attacker does not disturb other programs on a shared machine; a real one would scan
#: /proc/net/tcp) it sends requests over IPv4, IPv6 (::1) and an IPv4-mapped IPv6 socket, then
#: holds idle connections open in all three ways (to keep a one-shot page busy). Prints what it saw
#: and got.
HANDOFF_THIEF = r"""
import json, os, re, signal, socket, sys, time

def say(event, **kw):
    kw["event"] = event
    print(json.dumps(kw), flush=True)

stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)

def listeners():
    out = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = open(name).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            c = row.split()
            if len(c) > 3 and c[3] == "0A":
                addr, port = c[1].rsplit(":", 1)
                out.add(int(port, 16))
    return out

HOW = {
    "ipv4": (socket.AF_INET, "127.0.0.1"),
    "ipv6": (socket.AF_INET6, "::1"),
    "ipv4-mapped": (socket.AF_INET6, "::ffff:127.0.0.1"),
}

def request(how, port, raw):
    fam, host = HOW[how]
    try:
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.settimeout(3)
            s.connect((host, port))
            s.sendall(raw)
            data = b""
            while len(data) < 65536:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        return data.decode("latin-1")
    except OSError as e:
        return f"error {e.__class__.__name__}: {e}"

def get(how, port, path):
    return request(how, port, f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())

def post(how, port, path, body):
    return request(
        how, port,
        (f"POST {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: "
         "application/x-www-form-urlencoded\r\n"
         f"Content-Length: {len(body)}\r\n\r\n{body}").encode(),
    )

held = []
def hold(port, n=8):
    for how in HOW:
        fam, host = HOW[how]
        for _ in range(n):
            s = socket.socket(fam, socket.SOCK_STREAM)
            try:
                s.connect((host, port))
                s.sendall(b"GET /open/")  # an unfinished request
                held.append(s)
            except OSError:
                s.close()

def try_url(url, pid):
    m = re.match(r"https?://(?:[^/@]*@)?(?:127\.0\.0\.1|localhost|\[::1\]):(\d+)(/[^\s]*)?", url)
    if m and int(m[1]) in targets():
        port, path = int(m[1]), m[2] or "/"
        for how in HOW:
            answer = get(how, port, path)[:2000]
            say("response", via="argv", pid=pid, url=url, how=how, answer=answer)
    path = url[len("file://"):] if url.startswith("file://") else url
    if path.startswith("/") and not path.startswith("/proc"):
        try:
            with open(path, errors="replace") as f:
                say("read", path=path, ok=True, text=f.read(4000))
        except OSError as e:
            say("read", path=path, ok=False, error=str(e))
        # the folder around it, too
        try:
            say("listdir", path=os.path.dirname(path), ok=True,
                names=os.listdir(os.path.dirname(path)))
        except OSError as e:
            say("listdir", path=os.path.dirname(path), ok=False, error=str(e))

def targets():
    try:
        return {int(x) for x in open("targets").read().split()}
    except (OSError, ValueError):
        return set()

known_ports = set()
seen_args = set()
say("ready", uid=os.getuid(), listening=len(listeners()))
deadline = time.monotonic() + float(sys.argv[1] if len(sys.argv) > 1 else 120)
while not stop and time.monotonic() < deadline:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        for raw in args:
            arg = raw.decode("utf-8", "replace")
            for url in re.findall(r"(?:https?|file)://[^\s\"']+", arg):
                if (pid, url) in seen_args:
                    continue
                seen_args.add((pid, url))
                say("argv", pid=int(pid), url=url)
                try_url(url, int(pid))
    for port in sorted(targets() - known_ports):
        known_ports.add(port)
        for how in HOW:
            for path in ("/", "/open", "/open/x"):
                say("response", via="port", port=port, how=how, path=path,
                    answer=get(how, port, path)[:2000])
            say("response", via="port", port=port, how=how, path="POST /open",
                answer=post(how, port, "/open", "token=guess")[:2000])
        hold(port)
        say("attacked", port=port, held=len(held))
    time.sleep(0.002)
say("done", held=len(held))
"""
