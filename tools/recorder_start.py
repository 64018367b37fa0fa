#!/usr/bin/env python3
"""How long libvirt takes to start a recording QEMU from a snapshot (what a go-live and a clone
restart wait for), on an idle machine, outside any pair.

  .venv/bin/python tools/recorder_start.py vm-images/build/current [RUNS]

Boots the test guest recording (in /tmp/ftorch-recorder-start), takes snapshot s1 after 15 s,
then starts a recorder with `-loadvm s1`, paused, RUNS times, printing createXML's time. Run
`virt-admin daemon-log-filters "1:qemu 1:util.command 4:*"` and `daemon-log-outputs
"1:file:/tmp/libvirtd-debug.log"` first to see where libvirt spends it (docs/qemu-notes.md).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ftorch.host.virt import Host  # noqa: E402
from ftorch.rr.domain import GuestSpec, Mode, render  # noqa: E402

NAME = "ftorch-recorder-start"
DIR = Path("/tmp/ftorch-recorder-start")


def spec(loadvm: str | None = None) -> GuestSpec:
    return GuestSpec(name=NAME, kernel=str(DIR / "vmlinuz"), initrd=str(DIR / "initramfs.cpio.gz"),
                     cmdline="console=ttyS0 quiet nohz=off ftorch.ip=10.99.0.10/24",
                     disk=str(DIR / "data.qcow2"), rr_log=str(DIR / "rr.log"),
                     net_socket=str(DIR / "net.sock"), serial_log=str(DIR / "serial.log"),
                     mode=Mode.RECORD, loadvm=loadvm)


def main() -> int:
    image, runs = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 5
    DIR.mkdir(mode=0o777, exist_ok=True)
    os.chmod(DIR, 0o777)   # QEMU runs as libvirt-qemu
    for f in ("vmlinuz", "initramfs.cpio.gz", "data.qcow2"):
        if not (DIR / f).exists():
            shutil.copy(image / f, DIR / f)
        os.chmod(DIR / f, 0o666)
    host = Host()
    host.destroy(NAME)
    host.wait_gone(NAME, 10)
    snaps = subprocess.run(["qemu-img", "snapshot", "-l", str(DIR / "data.qcow2")],
                           capture_output=True, text=True).stdout
    if " s1 " not in snaps:
        guest = host.start(render(spec()))
        time.sleep(15)   # the boot: the snapshot should hold a booted guest's memory
        guest.savevm("s1")
        guest.kill_now()
        host.wait_gone(NAME, 10)
    times = []
    for _ in range(runs):
        t0 = time.monotonic()
        guest = host.start(render(spec("s1")), paused=True)
        times.append(time.monotonic() - t0)
        print(f"createXML with -loadvm, paused: {times[-1]:.3f} s", flush=True)
        guest.kill_now()
        host.wait_gone(NAME, 10)
    print(f"p50 {sorted(times)[len(times) // 2]:.3f} s of {runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
