"""Lay out a host's copy of a pair: kernel, initrd and a fresh data disk from the guest image."""
from __future__ import annotations

import pwd
import shutil
from pathlib import Path

from .config import PairConfig
from .errors import FtorchError
from .layout import image_dir, paths

QEMU_USER = "libvirt-qemu"


def qemu_ids() -> tuple[int, int]:
    """uid/gid QEMU runs as under libvirt: it must read and write the pair's files."""
    try:
        pw = pwd.getpwnam(QEMU_USER)
    except KeyError:
        raise FtorchError(f"user {QEMU_USER} missing: is libvirt-daemon-system installed?") from None
    return pw.pw_uid, pw.pw_gid


def fresh_host_dir(cfg: PairConfig, key: str, with_disk: bool = True) -> Path:
    """Make the pair's folder on host `key` with a fresh copy of the guest image (without its
    data disk for a clone's backup, which gets the clone's image)."""
    img = image_dir(cfg)
    for name in ("vmlinuz", "initramfs.cpio.gz", "data.qcow2"):
        if not (img / name).exists():
            raise FtorchError(f"guest image {img} lacks {name}: run `make image`")
    p = paths(cfg, key)
    previous_log = None
    if p.root.exists():
        if p.agent_log.exists():   # kept one generation back: why the last agent here ended
            previous_log = p.agent_log.read_bytes()
        shutil.rmtree(p.root)
    p.root.mkdir(parents=True)
    if previous_log is not None:
        (p.root / "agent.log.1").write_bytes(previous_log)
    uid, gid = qemu_ids()
    files = [("vmlinuz", p.kernel), ("initramfs.cpio.gz", p.initrd)]
    if with_disk:
        files.append(("data.qcow2", p.disk))
    for src, dst in files:
        shutil.copyfile(img / src, dst)
    shutil.chown(p.root, uid, gid)
    if with_disk:
        shutil.chown(p.disk, uid, gid)
    return p.root
