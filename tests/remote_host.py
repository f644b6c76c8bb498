"""A real remote host for the tests (issue 15): OpenSSH's server on 127.0.0.1, of the tests' own.

``sshd`` (Debian ``openssh-server``) runs as root with a generated host key and its own
``sshd_config`` in a temp folder (public keys only, no PAM, only the throw-away user allowed),
on a free port of 127.0.0.1. The remote account is a throw-away user (``useradd``, a unique
name per run, so parallel runs never meet) with a throw-away key. The ssh client side is an ssh
config file (``SMARTSPEC_SSH_CONFIG``) with these hosts:

* ``alias`` — the good one: that key, the host key pinned (``StrictHostKeyChecking yes``);
* ``badkey`` — the same server, but known_hosts holds another key for it (a host-key mismatch);
* ``nokey`` — the same server with a key it does not accept (an authentication failure).

``home`` is the user's home; the tests' cached OpenCode is hard-linked into the user's remote
install folder (``link_opencode``) so a start needs no download. Everything is removed at the
end (the user, their processes, the folders).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from smartspec_desktop.core.remote.engine import RemoteVersions
from smartspec_desktop.core.remote.scripts import REMOTE_INSTALL
from tests import opencode_config
from tests.throwaway import add_user, remove_user

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "a test sshd with a throw-away user needs root (useradd, sshd)"
    if not os.path.exists(SSHD) or not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        return "OpenSSH's server and client are not installed (apt-get install openssh-server)"
    if not shutil.which("useradd"):
        return "useradd is missing"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.with_suffix(".pub").read_text().strip()


@dataclass
class RemoteHost:
    user: str
    uid: int
    home: Path
    port: int
    folder: Path  # the temp folder with sshd's and the client's files
    ssh_config: Path
    sshd: subprocess.Popen[bytes] | None = None
    extra: list[Path] = field(default_factory=list)

    alias = "alias"

    def address(self, path: str | Path, host: str = "alias") -> str:
        return f"ssh://{host}{path}"

    def env(self, base: dict[str, str]) -> dict[str, str]:
        return base | {"SMARTSPEC_SSH_CONFIG": str(self.ssh_config)}

    def workspace(self, name: str) -> Path:
        """A folder of the remote user's (in their home)."""
        p = self.home / "work" / name
        self.run_as("mkdir", "-p", str(p))
        return p

    def run_as(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", self.user, "--", *argv],
            capture_output=True,
            text=True,
            check=True,
            cwd="/",
        )

    def install_dir(self) -> Path:
        return self.home / ".local" / "share" / REMOTE_INSTALL

    def link_opencode(self, opencode_bin: str) -> None:
        """The tests' cached OpenCode, hard-linked into the remote install folder."""
        prefix = Path(opencode_bin).resolve().parents[2]  # …/node_modules/opencode-ai/bin/x
        if prefix.name != "node_modules":
            prefix = Path(opencode_bin).parents[1]
        target = self.install_dir()
        if target.exists():
            return
        # The folder itself first: without it `cp -al` failed and every host got a full copy
        # (354 MB, ~0.8 CPU-s and the disk's time), seen in the process accounting.
        target.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(
            ["cp", "-al", str(prefix), str(target / "node_modules")],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:  # another file system: a copy
            shutil.rmtree(target / "node_modules", ignore_errors=True)
            subprocess.run(["cp", "-a", str(prefix), str(target / "node_modules")], check=True)
        for d in [self.home / ".local", self.home / ".local" / "share", target.parent, target]:
            os.chown(d, self.uid, self.uid)
        self._own_copy(target / "node_modules")
        self.seed_opencode_config(opencode_bin)

    def _own_copy(self, root: Path) -> None:
        """Make the linked copy the remote user's, as an install by that user would be. The
        app installs OpenCode under umask 077 (its folders 0700, most files 0600/0700): the
        copy's folders are new, so they are handed over; a small file only the owner may read
        is a link to the tests' cache, so it is replaced by the remote user's own copy. The
        binary (0755) stays a link, and so does the unused baseline build (it would be 180 MB
        to copy): nothing of the cache changes."""
        for dirpath, _dirs, files in os.walk(root):
            os.chown(dirpath, self.uid, self.uid)
            for name in files:
                path = Path(dirpath) / name
                st = path.lstat()
                if stat.S_ISLNK(st.st_mode) or st.st_mode & 0o004 or st.st_size > 1 << 20:
                    continue
                copy = path.with_name(f".{name}.copy")
                shutil.copy2(path, copy)
                os.chown(copy, self.uid, self.uid)
                os.replace(copy, path)

    def seed_opencode_config(self, opencode_bin: str) -> None:
        """The tests' warm OpenCode config dir (tests/opencode_config.py), a copy the remote
        user owns: as on a host where OpenCode ran before (no plugin install at each start)."""
        template = opencode_config.template_for(opencode_bin)
        target = self.home / ".config" / "opencode"
        if template is None or target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", str(template), str(target)], check=True)
        subprocess.run(["chown", "-R", f"{self.user}:{self.user}", str(target.parent)], check=True)

    def seed_known_version(self, state_dir: Path, version: str) -> None:
        """The app's memory of this host's OpenCode version (``state/remote-opencode.json``),
        keyed by the binary as the host's probe sees it: as after an earlier start, so a start
        does not ask ``opencode --version`` (~1 CPU-s) again. A changed binary (another key)
        is still asked."""
        binary = self.install_dir() / "node_modules" / ".bin" / "opencode"
        try:
            st = binary.stat()
        except OSError:
            return
        key = f"{binary}:{st.st_ino}:{int(st.st_mtime)}:{st.st_size}"
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        RemoteVersions(state_dir / "remote-opencode.json").put(self.alias, key, version)

    def seed_npm_cache(self, cache: Path) -> None:
        """A copy of the tests' npm cache as the remote user's (``~/.npmrc``), so an install
        there needs the registry only for what the cache lacks."""
        mine = self.home / ".npm-cache"
        if cache.is_dir() and not mine.exists():
            subprocess.run(["cp", "-a", str(cache), str(mine)], check=True)
            subprocess.run(["chown", "-R", f"{self.user}:{self.user}", str(mine)], check=True)
        lines = [f"cache={mine}", "prefer-offline=true", "audit=false", "fund=false"]
        # This machine may reach the registry through a proxy with its own CA (given to our
        # processes as NODE_EXTRA_CA_CERTS); the remote account needs it too, as a host of
        # that network would have it.
        extra_ca = os.environ.get("NODE_EXTRA_CA_CERTS", "")
        if extra_ca and os.path.isfile(extra_ca):
            ca = self.home / ".npm-ca.pem"
            system = Path("/etc/ssl/certs/ca-certificates.crt")
            bundle = system.read_text() if system.is_file() else ""
            ca.write_text(bundle + Path(extra_ca).read_text())
            os.chown(ca, self.uid, self.uid)
            lines.append(f"cafile={ca}")
        rc = self.home / ".npmrc"
        rc.write_text("\n".join(lines) + "\n")
        os.chown(rc, self.uid, self.uid)

    def unlink_opencode(self) -> None:
        shutil.rmtree(self.install_dir(), ignore_errors=True)

    def processes(self) -> list[psutil.Process]:
        out = []
        for p in psutil.process_iter(["uids"]):
            with contextlib.suppress(psutil.Error, TypeError):
                if p.info["uids"].real == self.uid:
                    out.append(p)
        return out

    def servers(self) -> list[psutil.Process]:
        """The remote user's ``opencode serve`` processes."""
        out = []
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                if p.status() == psutil.STATUS_ZOMBIE:
                    continue  # ended (this container's init may never reap it)
                cmd = p.cmdline()
                if "serve" in cmd and any("opencode" in c for c in cmd[:2]):
                    out.append(p)
        return out

    def session_of(self, server: psutil.Process) -> psutil.Process:
        """The host-side sshd of the connection that runs ``server`` (its nearest sshd
        ancestor): other sessions (a probe, a listing, a kill) may be closing meanwhile."""
        for p in server.parents():
            if p.name() == "sshd":
                return p
        raise AssertionError(f"no sshd above {server.pid}")

    def wait_no_servers(self, timeout: float = 20.0) -> list[psutil.Process]:
        end = time.monotonic() + timeout
        left = self.servers()
        while left and time.monotonic() < end:
            time.sleep(0.2)
            left = self.servers()
        return left

    def kill_all(self) -> None:
        left = self.processes()
        for p in left:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(left, timeout=5)


def _unlock(name: str) -> None:
    """Without PAM, OpenSSH refuses a locked account ("!" in shadow, useradd's default)."""
    r = subprocess.run(["usermod", "-p", "*", name], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"usermod -p could not unlock {name}: {r.stderr.strip()}")


def start_host() -> Iterator[RemoteHost]:
    folder = Path(tempfile.mkdtemp(prefix="ssrm-sshd-"))
    try:
        name, entry, home = add_user("ssrm", "/bin/sh")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    host: RemoteHost | None = None
    # Every step from here on is inside the try: whichever fails (usermod, a key, sshd), the
    # account, its processes and the folders are removed (tests/unit/test_harness.py).
    try:
        _unlock(name)
        host_key = folder / "host_ed25519"
        host_pub = _keygen(host_key)
        user_key = folder / "user_ed25519"
        user_pub = _keygen(user_key)
        other_key = folder / "other_ed25519"
        _keygen(other_key)
        other_host = folder / "otherhost_ed25519"
        other_host_pub = _keygen(other_host)
        auth = folder / "authorized_keys"
        auth.write_text(user_pub + "\n")
        os.chmod(auth, 0o644)
        os.chmod(folder, 0o755)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        port = _free_port()
        config = folder / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {host_key}",
                    f"PidFile {folder / 'sshd.pid'}",
                    "UsePAM no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    f"AuthorizedKeysFile {auth}",
                    f"AllowUsers {name}",
                    "PermitRootLogin no",
                    "StrictModes no",
                    "AllowTcpForwarding yes",
                    "AllowAgentForwarding no",
                    "X11Forwarding no",
                    "PermitUserEnvironment no",
                    "AcceptEnv none",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        known = folder / "known_hosts"
        known.write_text(f"[127.0.0.1]:{port} {host_pub}\n")
        wrong = folder / "known_hosts_wrong"
        wrong.write_text(f"[127.0.0.1]:{port} {other_host_pub}\n")

        def block(alias: str, key: Path, known_hosts: Path) -> str:
            return "\n".join(
                [
                    f"Host {alias}",
                    "  HostName 127.0.0.1",
                    f"  Port {port}",
                    f"  User {name}",
                    f"  IdentityFile {key}",
                    "  IdentitiesOnly yes",
                    "  IdentityAgent none",
                    f"  UserKnownHostsFile {known_hosts}",
                    "  GlobalKnownHostsFile /dev/null",
                    "  StrictHostKeyChecking yes",
                    "",
                ]
            )

        ssh_config = folder / "ssh_config"
        ssh_config.write_text(
            block("alias", user_key, known)
            + block("badkey", user_key, wrong)
            + block("nokey", other_key, known)
        )
        os.chmod(ssh_config, 0o600)
        host = RemoteHost(name, entry.pw_uid, home, port, folder, ssh_config)
        with open(folder / "sshd.log", "wb") as log_file:
            sshd = host.sshd = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)], stdout=log_file, stderr=subprocess.STDOUT
            )
        end = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if sshd.poll() is not None or time.monotonic() > end:
                raise RuntimeError(
                    "the test sshd did not start: " + (folder / "sshd.log").read_text()[-500:]
                )
            time.sleep(0.05)
        yield host
    finally:
        try:
            if host is not None:
                host.kill_all()
                if host.sshd is not None:
                    host.sshd.terminate()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        host.sshd.wait(timeout=5)
                    if host.sshd.poll() is None:
                        host.sshd.kill()
                        host.sshd.wait()
                host.kill_all()
        finally:
            remove_user(name, home)
            shutil.rmtree(folder, ignore_errors=True)
