"""What a host's copy of a pair starts from: the guest image's files, and QEMU's user."""
from __future__ import annotations

import pwd
from pathlib import Path

from ftorch.config import PairConfig
from ftorch.errors import FtorchError
from ftorch.host.layout import image_dir

QEMU_USER = "libvirt-qemu"
BOOT_FILES = ("vmlinuz", "initramfs.cpio.gz")
DISK = "data.qcow2"


def qemu_ids() -> tuple[int, int]:
    """uid/gid QEMU runs as under libvirt: it must read and write the pair's files."""
    try:
        pw = pwd.getpwnam(QEMU_USER)
    except KeyError:
        raise FtorchError(f"user {QEMU_USER} missing: is libvirt-daemon-system installed?") from None
    return pw.pw_uid, pw.pw_gid


def image_files(cfg: PairConfig, with_disk: bool = True) -> dict[str, Path]:
    """The guest image's files a host's pair folder starts with (name there -> path here);
    a clone's backup gets its disk later, from the clone."""
    img = image_dir(cfg)
    names = (*BOOT_FILES, DISK) if with_disk else BOOT_FILES
    for name in names:
        if not (img / name).exists():
            raise FtorchError(f"guest image {img} lacks {name}: run `make image`")
    return {name: img / name for name in names}
