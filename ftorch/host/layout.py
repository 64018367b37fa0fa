"""Where a pair's files live on a host, and the guest description each side runs."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from ftorch.config import PairConfig
from ftorch.rr.domain import GuestSpec, Mode


@dataclass(frozen=True)
class PairPaths:
    root: Path

    def __getattr__(self, name: str) -> Path:
        files = {"disk": "data.qcow2", "kernel": "vmlinuz", "initrd": "initramfs.cpio.gz",
                 "rr_log": "rr.log", "standby_rr_log": "rr-standby.log",
                 "serial": "serial.log", "net_sock": "net.sock",
                 "standby_net_sock": "net-standby.sock", "golive_sock": "golive.sock",
                 "standby_serial": "serial-standby.log",
                 "fifo": "replay.fifo", "spool": "rx.log", "control": "agent.sock", "agent_log": "agent.log",
                 "pid": "agent.pid"}
        if name in files:
            return self.root / files[name]
        raise AttributeError(name)


def paths(cfg: PairConfig, key: str) -> PairPaths:
    return PairPaths(cfg.host(key).path / cfg.pair)


def domain_name(cfg: PairConfig, key: str, standby: bool = False) -> str:
    """The guest's domain on host key, in one of its two slots; standby: the `-standby` slot.
    A recorder waiting for a state takes the slot the running QEMU does not (agent/standby.py),
    so after a go-live or a clone the live guest may be in either."""
    return f"ftorch-{cfg.pair}-{key}" + ("-standby" if standby else "")


# tmpfs: a guest's RAM in a file on disk would be paged out to it
RAM_DIR = Path("/dev/shm")


def ram_file(cfg: PairConfig, key: str) -> Path:
    """Where the guest's RAM is on host key, one file per pair and host: mapped by the replay or
    the recorder running there and by the standby recorder waiting beside it
    (agent/standby.py)."""
    return RAM_DIR / f"ftorch-{cfg.pair}-{key}.ram"


def clone_ram_file(cfg: PairConfig, key: str) -> Path:
    """A copy of the guest's RAM taken in a clone's pause, on its way to the new backup."""
    return RAM_DIR / f"ftorch-{cfg.pair}-{key}-clone.ram"


def rr_log(cfg: PairConfig, key: str, standby: bool = False) -> Path:
    """The log a recorder in that slot writes (a waiting one truncates it when it starts)."""
    p = paths(cfg, key)
    return p.standby_rr_log if standby else p.rr_log


def net_socket(cfg: PairConfig, key: str, standby: bool = False) -> Path:
    """The socket the guest's NIC serves and the agent's bridge dials (each domain its own)."""
    p = paths(cfg, key)
    return p.standby_net_sock if standby else p.net_sock


def domain_names(cfg: PairConfig, key: str) -> tuple[str, str]:
    """Every domain of the pair on host key: what to destroy when it must all go."""
    return domain_name(cfg, key), domain_name(cfg, key, standby=True)


def image_dir(cfg: PairConfig) -> Path:
    """The guest image folder; a relative path is taken from the config file's folder."""
    p = Path(cfg.guest.image)
    if not p.is_absolute() and cfg.source:
        p = Path(cfg.source).parent / p
    return p.resolve()


def smbios_uuid(cfg: PairConfig) -> str:
    """One SMBIOS UUID per pair, the same on both sides (the guest can see it)."""
    import uuid
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ftorch:{cfg.pair}"))


def guest_spec(cfg: PairConfig, key: str, mode: Mode, shim: str | None = None,
               loadvm: str | None = None, standby: bool = False,
               incoming: bool = False) -> GuestSpec:
    """standby: the `-standby` slot (its own name and files); incoming: a recorder that waits
    for a VM state (`-incoming defer`). Every QEMU but the baseline keeps the guest's RAM in
    the host's RAM file, so that one waiting beside it can take a state without the RAM."""
    p = paths(cfg, key)
    ip = ipaddress.ip_interface(cfg.guest.ip)
    net_sock = net_socket(cfg, key, standby)
    env = {"FTORCH_RR_LOG": str(rr_log(cfg, key, standby)),
           "FTORCH_FLUSH_US": str(cfg.replay.flush_us), "FTORCH_NET_SOCK": str(net_sock),
           "FTORCH_KICK": "1" if cfg.replay.inbound_kick else "0"}
    return GuestSpec(
        name=domain_name(cfg, key, standby), kernel=str(p.kernel), initrd=str(p.initrd),
        cmdline=f"console=ttyS0 quiet {cfg.guest.cmdline_extra} ftorch.ip={ip.with_prefixlen}",
        disk=str(p.disk),
        rr_log=str(p.fifo if mode == Mode.REPLAY else rr_log(cfg, key, standby)),
        # libvirt (virtlogd) lets one domain at a time have a serial file: each slot has its
        # own, and the guest's console is in the live slot's
        net_socket=str(net_sock), serial_log=str(p.standby_serial if standby else p.serial),
        mac=cfg.guest.mac,
        smbios_uuid=smbios_uuid(cfg), memory_mib=cfg.guest.memory_mib, mode=mode,
        shim=shim if mode == Mode.RECORD else None, loadvm=loadvm,
        incoming="defer" if incoming else None,
        ram_file=None if mode == Mode.PLAIN else str(ram_file(cfg, key)),
        emulator=cfg.host(key).emulator, icount_shift=cfg.replay.icount_shift,
        env=env if mode == Mode.RECORD and shim else {})
