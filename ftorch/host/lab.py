"""The one-machine lab: namespaces standing for host A, host B, a client and the operator.

  ftorch-client: eth0 10.77.0.100 ─┐
  ftorch-a: br-lan 10.77.0.1 + ftap0 (guest NIC, owned by agent A) ─ uplink ─┤ ftorch-lan: br0
  ftorch-b: br-lan 10.77.0.2 + ftap0 (guest NIC, owned by agent B) ─ uplink ─┘  (the LAN)
  ftorch-a: mgmt0 10.77.1.1, sshd ──┐
  ftorch-b: mgmt0 10.77.1.2, sshd ──┤ ftorch-lan: br-mgmt (management: SSH only)
  ftorch-ops: eth0 10.77.1.100 ─────┘ (where the operator's SSH connections start)
  ftorch-mon: eth0 10.77.0.200 on br0: Prometheus, scraping the agents (labprom.py)
  ftorch-nfs: eth0 10.77.0.50 on br0: the arbiter's NFS server (nfs-ganesha, labnfs.py)
Each host's sshd, and so its agent, runs in a mount namespace of its own in which the other
host's folder, the NFS server's folder and the operator's keys are hidden: a path from one host
into another's files fails instead of passing. Only addresses inside these namespaces are used.
Cutting a host off the LAN (`cut_link`) leaves its management link, as on hosts with a separate
management network; the NFS server is on the LAN, so a cut host loses the arbiter too.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ftorch.errors import LabError
from ftorch.host import labprom, labssh
from ftorch.host.labnfs import NfsServer
from ftorch.host.labssh import LAB_ROOT, OPERATOR_DIR
from ftorch.host.proc import run

LAN_NS = "ftorch-lan"
CLIENT_NS = "ftorch-client"
OPS_NS = "ftorch-ops"
MON_NS = "ftorch-mon"
NFS_NS = "ftorch-nfs"
SUBNET = "10.77.0"
MGMT_SUBNET = "10.77.1"
OPS_ADDRESS = f"{MGMT_SUBNET}.100"
TAP = "ftap0"
LIBVIRTD_LOG = "/var/log/ftorch-libvirtd.log"


@dataclass(frozen=True)
class LabHost:
    key: str
    netns: str
    address: str

    mgmt_address: str

    @property
    def lan_port(self) -> str:
        """The LAN bridge's port that is this host's network cable."""
        return f"lan-{self.key}"

    @property
    def dir(self) -> Path:
        """This host's local disk."""
        return LAB_ROOT / f"host{self.key.upper()}"


HOSTS = (LabHost("a", "ftorch-a", f"{SUBNET}.1", f"{MGMT_SUBNET}.1"),
         LabHost("b", "ftorch-b", f"{SUBNET}.2", f"{MGMT_SUBNET}.2"))
CLIENT_ADDRESS = f"{SUBNET}.100"
MON_ADDRESS = f"{SUBNET}.200"
NFS = NfsServer(NFS_NS, f"{SUBNET}.50", LAB_ROOT / "nfs")   # the arbiter: nfs://10.77.0.50/ftorch
GUEST_ADDRESS = f"{SUBNET}.10"


def _ip(*args: str) -> None:
    run("ip", *args, error=LabError)


def namespaces() -> set[str]:
    out = run("ip", "netns", "list", error=LabError).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _daemons() -> None:
    """Start virtlogd and libvirtd if they are not running (no systemd needed).

    libvirtd runs under `tini -s`, a subreaper: libvirt daemonizes QEMU, and an orphaned QEMU
    that exits stays a zombie until PID 1 reaps it; libvirt waits for that (kill(pid, 0) every
    200 ms). Without systemd, PID 1 here reaped after ~1.6 s, which every go-live paid."""
    if subprocess.run(["pgrep", "-x", "virtlogd"], capture_output=True).returncode != 0:
        run("virtlogd", "-d", error=LabError)
    if subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True).returncode != 0:
        with open(LIBVIRTD_LOG, "ab") as out:
            subprocess.Popen(["tini", "-s", "--", "libvirtd"], stdin=subprocess.DEVNULL, stdout=out,
                             stderr=out, start_new_session=True)
    deadline = time.monotonic() + 20
    while subprocess.run(["virsh", "-c", "qemu:///system", "version"],
                         capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise LabError("libvirtd started but does not answer on qemu:///system within 20 s")
        time.sleep(0.2)


def up() -> None:
    """Create the lab (idempotent: an existing lab is left as it is)."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, taps, libvirtd)")
    _daemons()
    have = namespaces()
    if LAN_NS in have and subprocess.run(["ip", "-n", LAN_NS, "link", "show", "br-mgmt"],
                                         capture_output=True).returncode != 0:
        raise LabError("the lab was made by an older ftorch (no management bridge for SSH): "
                       "`ftorch lab down`, then `ftorch lab up`")
    if LAN_NS not in have:
        _ip("netns", "add", LAN_NS)
        for bridge in ("br0", "br-mgmt"):
            _ip("-n", LAN_NS, "link", "add", bridge, "type", "bridge", "forward_delay", "0")
            _ip("-n", LAN_NS, "link", "set", bridge, "up")
    for h in HOSTS:
        if h.netns not in have:
            _host_up(h)
    if CLIENT_NS not in have:
        _station(CLIENT_NS, "lan-c", "br0", CLIENT_ADDRESS)
    if OPS_NS not in have:
        _station(OPS_NS, "mgmt-o", "br-mgmt", OPS_ADDRESS)
    if MON_NS not in have:
        _station(MON_NS, "lan-m", "br0", MON_ADDRESS)
    if NFS_NS not in have:
        _station(NFS_NS, "lan-s", "br0", NFS.address)
    for h in HOSTS:
        h.dir.mkdir(parents=True, exist_ok=True)
    (LAB_ROOT / "shared").mkdir(parents=True, exist_ok=True)   # for `shared_dir: PATH` configs
    NFS.home.mkdir(parents=True, exist_ok=True)
    labssh.keys([h.key for h in HOSTS], {h.key: h.mgmt_address for h in HOSTS})
    for h in HOSTS:
        labssh.start_sshd(h.key, h.netns, h.mgmt_address, hide=[o.dir for o in HOSTS if o != h]
                          + [OPERATOR_DIR, NFS.home], path=os.path.dirname(sys.executable))
    NFS.start()
    labprom.start(MON_NS, MON_ADDRESS, [h.address for h in HOSTS])
    labprom.start_relay(MON_NS, MON_ADDRESS)


def prometheus_url() -> str:
    """The lab's Prometheus (UI and API), reachable inside the lab namespaces."""
    return f"http://{MON_ADDRESS}:{labprom.PORT}"


def _station(ns: str, port: str, bridge: str, address: str) -> None:
    """A namespace with one cable (eth0) into a bridge of the LAN namespace."""
    _ip("netns", "add", ns)
    _ip("-n", LAN_NS, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
    _ip("-n", LAN_NS, "link", "set", port, "master", bridge, "up")
    _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
    _ip("-n", ns, "link", "set", "eth0", "up")
    _ip("-n", ns, "link", "set", "lo", "up")


def _host_up(h: LabHost) -> None:
    _ip("netns", "add", h.netns)
    _ip("-n", LAN_NS, "link", "add", h.lan_port, "type", "veth", "peer", "name", "uplink",
        "netns", h.netns)
    _ip("-n", LAN_NS, "link", "set", h.lan_port, "master", "br0", "up")
    _ip("-n", h.netns, "link", "add", "br-lan", "type", "bridge", "forward_delay", "0")
    _ip("-n", h.netns, "link", "set", "uplink", "master", "br-lan", "up")
    _ip("-n", h.netns, "tuntap", "add", "dev", TAP, "mode", "tap")
    _ip("-n", h.netns, "link", "set", TAP, "master", "br-lan", "up")
    _ip("-n", h.netns, "addr", "add", f"{h.address}/24", "dev", "br-lan")
    _ip("-n", h.netns, "link", "set", "br-lan", "up")
    _ip("-n", h.netns, "link", "set", "lo", "up")
    _ip("-n", LAN_NS, "link", "add", f"mgmt-{h.key}", "type", "veth", "peer", "name", "mgmt0",
        "netns", h.netns)
    _ip("-n", LAN_NS, "link", "set", f"mgmt-{h.key}", "master", "br-mgmt", "up")
    _ip("-n", h.netns, "addr", "add", f"{h.mgmt_address}/24", "dev", "mgmt0")
    _ip("-n", h.netns, "link", "set", "mgmt0", "up")


def down() -> None:
    """Stop the hosts' sshd and remove every lab namespace (and with them their links);
    leaves libvirtd running."""
    from ftorch.rpc import ssh
    ssh.close_all()   # this process's connections into the lab die with it
    for h in HOSTS:
        labssh.stop_sshd(h.key)
    labprom.stop()
    NFS.stop()
    for ns in (CLIENT_NS, OPS_NS, MON_NS, NFS_NS, *(h.netns for h in HOSTS), LAN_NS):
        if ns in namespaces():
            _ip("netns", "del", ns)


def _host(key: str) -> LabHost:
    return {h.key: h for h in HOSTS}[key]


def cut_link(key: str, up_: bool) -> None:
    """Unplug (or plug back) host `key`'s cable to the LAN."""
    _ip("-n", LAN_NS, "link", "set", _host(key).lan_port, "up" if up_ else "down")


def slow_link(key: str, rate: str | None) -> None:
    """Host `key`'s LAN cable carries at most `rate` each way (tc htb, e.g. "1mbit"), as a
    congested or degraded link would; None: full speed again. The management network (SSH)
    is another cable and stays as it is."""
    for ns, dev in ((_host(key).netns, "uplink"), (LAN_NS, _host(key).lan_port)):
        subprocess.run(["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"], capture_output=True)
        if rate:
            run("tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb",
                "default", "10", error=LabError)
            run("tc", "-n", ns, "class", "add", "dev", dev, "parent", "1:", "classid", "1:10",
                "htb", "rate", rate, error=LabError)


def starve(domain: str, share: float | None) -> None:
    """The domain's QEMU (every thread of it) gets at most `share` of one CPU (a fixed CFS
    quota through libvirt, as a host crowded by other work would give it); None: no limit."""
    period = 100000
    quota = -1 if share is None else max(1000, int(share * period))
    run("virsh", "-q", "schedinfo", domain, "--live", f"global_period={period}",
        f"global_quota={quota}", error=LabError)


FAULT_TABLE = "ftorch_fault"


def drop(key: str, inbound: str, outbound: str) -> None:
    """Host `key` drops the packets that match these nft expressions (e.g. `tcp dport 7400`),
    as a firewall or a broken switch port would, until undrop(key)."""
    undrop(key)
    ruleset = (f"table inet {FAULT_TABLE} {{\n"
               f" chain in {{ type filter hook input priority 0; {inbound} drop; }}\n"
               f" chain out {{ type filter hook output priority 0; {outbound} drop; }}\n}}\n")
    run("ip", "netns", "exec", _host(key).netns, "nft", "-f", "-", input=ruleset.encode(), error=LabError)


def undrop(key: str) -> None:
    subprocess.run(["ip", "netns", "exec", _host(key).netns, "nft", "delete", "table", "inet", FAULT_TABLE],
                   capture_output=True)   # absent: nothing to undo


def qemu_pid_file(domain: str) -> Path:
    return Path(f"/run/libvirt/qemu/{domain}.pid")


def running(domains: Iterable[str]) -> list[str]:
    """Those of `domains` whose QEMU runs (libvirt keeps its pid file while it does)."""
    return [d for d in domains if qemu_pid_file(d).exists()]


def kill_host(agent_pid_file: Path, domains: Iterable[str],
              sig: signal.Signals = signal.SIGKILL, agent: bool = True, qemu: bool = True) -> None:
    """A host dies: its agent and the QEMUs of those of `domains` that run there get SIGKILL,
    nothing shuts down cleanly. With SIGSTOP the host freezes (SIGCONT: it wakes). agent or
    qemu False: that part of the host survives (a crash of the other alone)."""
    qemus = [int(qemu_pid_file(d).read_text()) for d in running(domains)] if qemu else []
    if qemu and not qemus:
        raise LabError(f"no QEMU of {', '.join(domains)} runs: nothing of the guest to kill")
    if agent:
        os.kill(int(agent_pid_file.read_text()), sig)
    for pid in qemus:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass   # it exited since its pid file was read (a clone's old recorder, say)


def restart_libvirtd() -> None:
    """Stop libvirtd and start it again, as an upgrade or an operator does: the guests' QEMUs
    run on, and every open libvirt connection breaks."""
    subprocess.run(["pkill", "-x", "libvirtd"], capture_output=True)
    deadline = time.monotonic() + 30
    while subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True).returncode == 0:
        if time.monotonic() > deadline:
            raise LabError("libvirtd did not exit within 30 s of SIGTERM")
        time.sleep(0.05)
    _daemons()


def status() -> dict[str, object]:
    have = namespaces()
    return {"namespaces": {ns: ns in have for ns in
                           (LAN_NS, CLIENT_NS, OPS_NS, MON_NS, NFS_NS,
                            *(h.netns for h in HOSTS))},
            "nfs": NFS.url if NFS.pid() else None,
            "prometheus": prometheus_url() if labprom.pid() else None,
            "prometheus_local": labprom.local_url(),
            "root": str(LAB_ROOT)}
