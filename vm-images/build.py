#!/usr/bin/env python3
"""Build the ftorch test guest from Debian packages, cached by content hash.

Output: vm-images/build/<hash>/{vmlinuz,initramfs.cpio.gz,data.qcow2,manifest.json} and a
`current` link to it. Rebuilding with the same inputs does nothing.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
GUEST = HERE / "guest"
MODULES = ("e1000", "virtio_blk", "virtio_pci")
DATA_DISK_MIB = 72   # kvsvc.c: MAXREC records of 512 bytes (a long fault campaign writes ~80000)
                     # and 8 MiB of scratch for its STRESS job
BUSYBOX = Path("/bin/busybox")


def run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def kernel_version() -> str:
    """The newest installed kernel that has modules (from linux-image-amd64)."""
    versions = sorted(p.name for p in Path("/lib/modules").iterdir() if (p / "modules.dep").exists())
    if not versions:
        sys.exit("build: no kernel modules under /lib/modules: install linux-image-amd64")
    return versions[-1]


def module_files(kver: str) -> list[Path]:
    """Module files in load order (dependencies first), without duplicates."""
    seen: list[Path] = []
    for mod in MODULES:
        out = run("modprobe", "--show-depends", "-S", kver, mod)
        for line in out.splitlines():
            if line.startswith("insmod "):
                path = Path(line.split()[1])
                if path not in seen:
                    seen.append(path)
    return seen


def input_hash(kver: str, mods: list[Path]) -> str:
    h = hashlib.sha256()
    for p in [Path(__file__), *sorted(GUEST.iterdir()), Path(f"/boot/vmlinuz-{kver}"), BUSYBOX, *mods]:
        h.update(p.name.encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
    h.update(run("gcc", "--version").encode())
    return h.hexdigest()[:16]


def build_initramfs(root: Path, mods: list[Path], out: Path) -> None:
    for d in ("bin", "proc", "sys", "dev", "etc", "lib/modules"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    (root / "bin/sh").symlink_to("busybox")  # the interpreter of /init, before --install
    shutil.copy2(GUEST / "init", root / "init")
    order = []
    for m in mods:
        name = m.name.removesuffix(".xz")
        data = m.read_bytes()
        (root / "lib/modules" / name).write_bytes(lzma.decompress(data) if m.suffix == ".xz" else data)
        order.append(name)
    (root / "etc/modules.order").write_text("\n".join(order) + "\n")
    subprocess.run(["gcc", "-O2", "-static", "-Wall", "-o", str(root / "bin/kvsvc"),
                    str(GUEST / "kvsvc.c")], check=True)
    files = subprocess.run(["find", "."], cwd=root, check=True, capture_output=True).stdout
    cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet", "--reproducible"], cwd=root,
                          input=files, check=True, capture_output=True).stdout
    out.write_bytes(gzip.compress(cpio, mtime=0))


def build(out_root: Path) -> Path:
    kver = kernel_version()
    mods = module_files(kver)
    digest = input_hash(kver, mods)
    target = out_root / digest
    if (target / "manifest.json").exists():
        print(f"guest image up to date: {target}")
    else:
        tmp = Path(tempfile.mkdtemp(dir=out_root, prefix=".build-"))
        root = tmp / "root"
        build_initramfs(root, mods, tmp / "initramfs.cpio.gz")
        shutil.rmtree(root)
        shutil.copy2(f"/boot/vmlinuz-{kver}", tmp / "vmlinuz")
        run("qemu-img", "create", "-q", "-f", "qcow2", str(tmp / "data.qcow2"), f"{DATA_DISK_MIB}M")
        manifest = {"hash": digest, "kernel": kver, "modules": [m.name for m in mods],
                    "data_disk_mib": DATA_DISK_MIB, "service_port": 7000}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        os.chmod(tmp, 0o755)
        tmp.rename(target)
        print(f"guest image built: {target}")
    current = out_root / "current"
    if current.is_symlink() or current.exists():
        current.unlink()
    current.symlink_to(digest)
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "build", help="output folder")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    build(args.out)


if __name__ == "__main__":
    main()
