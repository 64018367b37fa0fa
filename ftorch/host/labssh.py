"""SSH in the one-machine lab: keys, known_hosts and one real sshd per host namespace.

The operator's key lives in `operator/` (hidden from the hosts); each host's folder holds its
host key, the key its agent reaches the peer with, the keys it accepts (the operator's and the
peer agent's) and the peer's host key. Real hosts get the same files from provisioning.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from ftorch.errors import LabError
from ftorch.host.proc import run

LAB_ROOT = Path("/var/lib/ftorch/lab")     # the lab's "disks": a folder per host, shared, keys
OPERATOR_DIR = LAB_ROOT / "operator"
# The checkout that started the lab: its hosts' SSH sessions, and so their agents, import this
# tree's ftorch (a venv shared by git worktrees would otherwise give every tree the same code)
TREE = Path(__file__).resolve().parents[2]
SSHD = "/usr/sbin/sshd"


def host_dir(key: str) -> Path:
    return LAB_ROOT / f"host{key.upper()}"


def ssh_dir(key: str) -> Path:
    return host_dir(key) / "ssh"


def _keygen(path: Path, comment: str) -> str:
    """The public key of an ed25519 key pair at path, made if missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path),
            error=LabError)
    return Path(f"{path}.pub").read_text().strip()


def host_key(key: str) -> Path:
    return ssh_dir(key) / "ssh_host_ed25519_key"


def keys(hosts: list[str], mgmt: dict[str, str]) -> None:
    """Make the lab's keys (once) and write authorized_keys and known_hosts (every time)."""
    operator = _keygen(OPERATOR_DIR / "id_ed25519", "ftorch-lab-operator")
    agents = {k: _keygen(ssh_dir(k) / "id_ed25519", f"ftorch-lab-agent-{k}") for k in hosts}
    hostkeys = {k: _keygen(host_key(k), f"ftorch-lab-host-{k}") for k in hosts}
    known = {k: " ".join(hostkeys[k].split()[:2]) for k in hosts}
    (OPERATOR_DIR / "known_hosts").write_text("".join(f"{mgmt[k]} {known[k]}\n" for k in hosts))
    for k in hosts:
        peers = [p for p in hosts if p != k]
        auth = ssh_dir(k) / "authorized_keys"
        auth.write_text("".join(f"{line}\n" for line in [operator, *(agents[p] for p in peers)]))
        auth.chmod(0o600)
        (ssh_dir(k) / "known_hosts").write_text("".join(f"{mgmt[p]} {known[p]}\n" for p in peers))


def _config(key: str, address: str, path: str) -> Path:
    d = ssh_dir(key)
    cfg = d / "sshd_config"
    cfg.write_text(f"""# ftorch lab: host {key}'s sshd (written by `ftorch lab up`)
ListenAddress {address}
Port 22
HostKey {host_key(key)}
AuthorizedKeysFile {d / "authorized_keys"}
PidFile {d / "sshd.pid"}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
SetEnv PATH={path}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PYTHONPATH={TREE}
""")
    return cfg


def sshd_pid(key: str) -> int | None:
    try:
        pid = int((ssh_dir(key) / "sshd.pid").read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def _cover(dirs: list[Path]) -> str:
    """Shell commands that hide each folder under an empty, unwritable file system (in the
    mount namespace they run in)."""
    return " && ".join(f"mount -t tmpfs -o size=64k,mode=000 ftorch-hidden {d}" for d in dirs)


def start_sshd(key: str, netns: str, address: str, hide: list[Path], path: str) -> None:
    """Start host `key`'s sshd in its namespace, in a mount namespace of its own (ip netns exec
    makes one) where the folders in `hide` are covered by empty file systems."""
    if sshd_pid(key) is not None:
        return
    if not os.path.exists(SSHD):
        raise LabError(f"{SSHD} missing: install openssh-server (`make setup`)")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)   # sshd's privilege separation folder
    (ssh_dir(key) / "sshd.pid").unlink(missing_ok=True)
    script = f"{_cover(hide)} && exec {SSHD} -D -e -f {_config(key, address, path)}"
    with open(ssh_dir(key) / "sshd.log", "ab") as out:
        subprocess.Popen(["ip", "netns", "exec", netns, "sh", "-c", script],
                         stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    deadline = time.monotonic() + 20
    while sshd_pid(key) is None:
        if time.monotonic() > deadline:
            raise LabError(f"sshd of host {key} did not start within 20 s "
                           f"(see {ssh_dir(key) / 'sshd.log'})")
        time.sleep(0.05)


def stop_sshd(key: str) -> None:
    """Stop host `key`'s sshd (the listener; sessions it started go on, as on a real host)."""
    pid = sshd_pid(key)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while sshd_pid(key) is not None and time.monotonic() < deadline:
        time.sleep(0.05)


def operator_command(argv: list[str]) -> list[str]:
    """argv run as the operator's side of the lab: in a mount namespace of its own in which
    every host's folder is hidden, so that the CLI can reach a host only over SSH."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'{_cover([host_dir(k) for k in ("a", "b")])} && exec "$@"', "sh", *argv]
