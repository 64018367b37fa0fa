"""libvirt domain XML for a protected guest, in record or replay mode, from one description.

Pure: renders strings, touches nothing. What each option is for is in docs/qemu-notes.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from xml.sax.saxutils import escape, quoteattr

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"


class Mode(StrEnum):
    RECORD = "record"
    REPLAY = "replay"
    PLAIN = "plain"      # no record/replay at all: the baseline benchmarks compare against


@dataclass(frozen=True)
class GuestSpec:
    """Everything that must be identical on both sides, plus each side's own paths."""

    name: str
    kernel: str
    initrd: str
    cmdline: str
    disk: str
    rr_log: str
    net_socket: str
    serial_log: str
    mac: str = "52:54:00:f7:00:01"
    smbios_uuid: str = "6674f0e1-0000-4000-8000-000000000001"
    memory_mib: int = 128
    mode: Mode = Mode.RECORD
    shim: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    loadvm: str | None = None
    incoming: str | None = None   # "defer": wait for a VM state to load (a standby recorder)
    ram_file: str | None = None   # the guest's RAM in this (tmpfs) file, shared with another QEMU
    emulator: str = "/usr/bin/qemu-system-x86_64"
    icount_shift: str = "auto"    # both sides the same: the guest's clock depends on it


def qemu_args(spec: GuestSpec) -> list[str]:
    """The QEMU arguments libvirt cannot express: icount record/replay, blkreplay, stream NIC."""
    nic = [  # A stream netdev lets the agent own the LAN port (and later the output gate);
             # e1000 replays where virtio-net still hangs on 10.0.2.
           "-netdev", f"stream,id=n1,server=on,addr.type=unix,addr.path={spec.net_socket}",
           "-device", f"e1000,netdev=n1,mac={spec.mac},bus=pci.0,addr=0x6"]
    smbios = ["-smbios", f"type=1,uuid={spec.smbios_uuid}"]
    if spec.mode == Mode.PLAIN:   # libvirt's own RAM (pc.ram): the baseline as users run it
        return [*smbios, "-drive", f"file={spec.disk},format=qcow2,if=none,id=img-direct",
                "-device", "virtio-blk-pci,drive=img-direct,bus=pci.0,addr=0x5", *nic]
    args = ["-icount", f"shift={spec.icount_shift},rr={spec.mode.value},rrfile={spec.rr_log}",
            # The guest sees the SMBIOS UUID (Linux mixes DMI data into its entropy), so both
            # sides must show the same one; libvirt gives every domain its own, and overriding
            # it here leaves libvirt's per-domain UUIDs unique. A differing UUID diverged
            # the replay during boot (docs/qemu-notes.md).
            *smbios,
            # blkreplay makes disk completions part of the log; libvirt knows nothing of it,
            # so the devices carry explicit PCI addresses that stay clear of libvirt's own.
            "-drive", f"file={spec.disk},format=qcow2,if=none,id=img-direct",
            "-drive", "driver=blkreplay,if=none,image=img-direct,id=img-blkreplay",
            "-device", "virtio-blk-pci,drive=img-blkreplay,bus=pci.0,addr=0x5",
            *nic, "-object", "filter-replay,id=fr1,netdev=n1", *ram_args(spec)]
    if spec.loadvm:
        args += ["-loadvm", spec.loadvm]
    if spec.incoming:
        args += ["-incoming", spec.incoming]
    return args


RAM_ID = "ram0"


def ram_args(spec: GuestSpec) -> list[str]:
    """The guest's RAM as a backend of ftorch's own, one id on every recorder and replay: a
    saved state names its RAM blocks, and a clone's or a go-live's state must load wherever
    the pair runs next. A replay and the standby recorder beside it map one file, so a go-live
    need not carry the RAM across (x-ignore-shared). libvirt's own `pc.ram` stays, unused and
    untouched (a later -machine memory-backend wins)."""
    size = f"size={spec.memory_mib}M"
    backend = (f"memory-backend-file,id={RAM_ID},{size},mem-path={spec.ram_file},share=on"
               if spec.ram_file else f"memory-backend-ram,id={RAM_ID},{size}")
    return ["-object", backend, "-machine", f"memory-backend={RAM_ID}"]


def render(spec: GuestSpec) -> str:
    """The domain XML for spec."""
    args = "\n".join(f"    <qemu:arg value={quoteattr(a)}/>" for a in qemu_args(spec))
    env = dict(spec.env)
    if spec.shim:
        env["LD_PRELOAD"] = spec.shim
    envs = "\n".join(f"    <qemu:env name={quoteattr(k)} value={quoteattr(v)}/>"
                     for k, v in sorted(env.items()))
    return f"""<domain type='qemu' xmlns:qemu='{QEMU_NS}'>
  <name>{escape(spec.name)}</name>
  <memory unit='MiB'>{spec.memory_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(spec.kernel)}</kernel>
    <initrd>{escape(spec.initrd)}</initrd>
    <cmdline>{escape(spec.cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <clock offset='utc'><timer name='hpet' present='no'/></clock>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{escape(spec.emulator)}</emulator>
    <controller type='usb' model='none'/>
    <serial type='file'><source path={quoteattr(spec.serial_log)}/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>
{args}
{envs}
  </qemu:commandline>
</domain>
"""
