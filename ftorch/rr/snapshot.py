"""Repair the replay state of a go-live snapshot so that the new primary can be cloned later.

A snapshot taken by a replaying QEMU carries the replay reader's state (`has_unread_data`,
`data_kind`, `read_event_id`); a recording QEMU started from it keeps those fields and writes them
into every snapshot it takes, and a backup replaying such a clone waits for ever on an event it
believes it has already read (docs/qemu-notes.md). Before the new recorder loads the go-live
snapshot, its `replay` vmstate section is rewritten to what a fresh recording has.

Pure part: the section's layout (QEMU 10.0 replay/replay-snapshot.c, vmstate version 3).
I/O part: a minimal qcow2 reader/writer for an internal snapshot's vmstate (docs/interop/qcow2.txt).
Only for images no QEMU has open.
"""
from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from ftorch.errors import FtorchError

SECTION_FULL, SECTION_FOOTER = 0x04, 0x7E
VMSTATE_VERSION = 3
_NAME = b"\x06replay"
# after the section header: i64 clocks[2], u64 current_icount, i32 instruction_count,
# u32 current_event, u32 data_kind, bool has_unread_data, u64 file_offset, u64 block_request_id,
# u64 read_event_id
_FIELDS = struct.Struct(">qqQiIIBQQQ")
_HEAD = 1 + 4 + len(_NAME) + 4 + 4      # marker, section id, name, instance id, version


class SnapshotRepairError(FtorchError):
    """The go-live snapshot could not be found or repaired."""


@dataclass(frozen=True)
class ReplaySection:
    clock_host: int
    clock_virtual_rt: int
    current_icount: int
    instruction_count: int
    current_event: int
    data_kind: int
    has_unread_data: int
    file_offset: int
    block_request_id: int
    read_event_id: int

    def fresh_recording(self) -> ReplaySection:
        """The reader's state as a fresh recording has it; clocks and positions kept."""
        return replace(self, instruction_count=0, data_kind=0xFFFFFFFF, has_unread_data=0,
                       read_event_id=(1 << 64) - 1)


def find_section(buf: bytes) -> int | None:
    """Offset of the last well-formed `replay` section in buf (device sections follow RAM)."""
    pos = len(buf)
    while (pos := buf.rfind(_NAME, 0, pos)) >= 5:
        start = pos - 5
        end = start + _HEAD + _FIELDS.size
        if (buf[start] == SECTION_FULL and end + 5 <= len(buf)
                and struct.unpack_from(">II", buf, pos + len(_NAME)) == (0, VMSTATE_VERSION)
                and buf[end] == SECTION_FOOTER and buf[end + 1:end + 5] == buf[start + 1:start + 5]):
            return start
    return None


def decode_section(buf: bytes, start: int) -> ReplaySection:
    return ReplaySection(*_FIELDS.unpack_from(buf, start + _HEAD))


def encode_fields(section: ReplaySection) -> bytes:
    return _FIELDS.pack(*(getattr(section, f) for f in ReplaySection.__dataclass_fields__))


# --- qcow2 -----------------------------------------------------------------------------------

_QCOW2_MAGIC = b"QFI\xfb"
_OFFSET_MASK = 0x00FFFFFFFFFFFE00
_COMPRESSED = 1 << 62
_ZERO = 1


@dataclass(frozen=True)
class Snapshot:
    name: str
    l1_offset: int
    l1_size: int
    vm_state_size: int


class Qcow2:
    """Just enough qcow2 to read and rewrite an internal snapshot's vmstate in place."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR)
        head = os.pread(self._fd, 104, 0)
        if head[:4] != _QCOW2_MAGIC:
            raise SnapshotRepairError(f"{path} is not a qcow2 image")
        version, = struct.unpack_from(">I", head, 4)
        self.cluster_bits, = struct.unpack_from(">I", head, 20)
        self.size, = struct.unpack_from(">Q", head, 24)
        nb_snapshots, = struct.unpack_from(">I", head, 60)
        snapshots_offset, = struct.unpack_from(">Q", head, 64)
        incompatible = struct.unpack_from(">Q", head, 72)[0] if version >= 3 else 0
        if incompatible & 0b10110:   # corrupt, external data file, extended L2 entries
            raise SnapshotRepairError(f"{path}: qcow2 features {incompatible:#x} not supported "
                                      "(corrupt image, external data file or extended L2)")
        self.cluster_size = 1 << self.cluster_bits
        self.l2_bits = self.cluster_bits - 3
        self.snapshots = self._read_snapshots(snapshots_offset, nb_snapshots)

    def _read_snapshots(self, offset: int, count: int) -> list[Snapshot]:
        out = []
        for _ in range(count):
            head = os.pread(self._fd, 40, offset)
            l1_off, l1_size, id_len, name_len, _, _, _, vm_size, extra = struct.unpack(">QIHHIIQII", head)
            extra_data = os.pread(self._fd, extra, offset + 40)
            if extra >= 8:
                vm_size = struct.unpack_from(">Q", extra_data)[0]
            name_at = offset + 40 + extra + id_len
            name = os.pread(self._fd, name_len, name_at).decode(errors="replace")
            out.append(Snapshot(name, l1_off, l1_size, vm_size))
            offset = (name_at + name_len + 7) & ~7
        return out

    def vmstate_snapshot(self, tag: str) -> Snapshot:
        """The snapshot named tag that holds a vmstate (savevm also makes a vmstate-less twin)."""
        for s in self.snapshots:
            if s.name == tag and s.vm_state_size:
                return s
        raise SnapshotRepairError(f"{self.path}: no snapshot {tag!r} with a VM state "
                                  f"(found {[s.name for s in self.snapshots]})")

    def _host_offset(self, snap: Snapshot, virtual: int) -> int:
        l1_index = virtual >> (self.cluster_bits + self.l2_bits)
        if l1_index >= snap.l1_size:
            raise SnapshotRepairError(f"{self.path}: VM state beyond snapshot {snap.name!r}'s L1 table")
        l1, = struct.unpack(">Q", os.pread(self._fd, 8, snap.l1_offset + 8 * l1_index))
        l2_index = (virtual >> self.cluster_bits) & ((1 << self.l2_bits) - 1)
        l2, = struct.unpack(">Q", os.pread(self._fd, 8, (l1 & _OFFSET_MASK) + 8 * l2_index))
        if not l1 & _OFFSET_MASK or l2 & (_COMPRESSED | _ZERO) or not l2 & _OFFSET_MASK:
            raise SnapshotRepairError(f"{self.path}: VM state cluster at {virtual:#x} is "
                                      "unallocated, zero or compressed")
        return (l2 & _OFFSET_MASK) + (virtual & (self.cluster_size - 1))

    def vmstate_base(self) -> int:
        """Virtual offset where QEMU keeps the VM state: the first L1 entry past the disk."""
        per_l1 = 1 << (self.cluster_bits + self.l2_bits)
        return -(-self.size // per_l1) * per_l1

    def read_vmstate(self, snap: Snapshot, offset: int, length: int) -> bytes:
        out = bytearray()
        base = self.vmstate_base()
        while length > 0:
            n = min(length, self.cluster_size - ((base + offset) % self.cluster_size))
            out += os.pread(self._fd, n, self._host_offset(snap, base + offset))
            offset, length = offset + n, length - n
        return bytes(out)

    def write_vmstate(self, snap: Snapshot, offset: int, data: bytes) -> None:
        base = self.vmstate_base()
        while data:
            n = min(len(data), self.cluster_size - ((base + offset) % self.cluster_size))
            os.pwrite(self._fd, data[:n], self._host_offset(snap, base + offset))
            offset, data = offset + n, data[n:]
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


def locate(img: Qcow2, snap: Snapshot, find: Callable[[bytes], int | None] | None = None,
           span: int = _HEAD + _FIELDS.size + 5, what: str = "replay",
           window: int = 1 << 20) -> int:
    """VM-state offset of a device section (`find` spots it in a buffer; `span`: its length),
    searching backwards from the end, where QEMU writes the device sections after the RAM."""
    find = find or find_section
    end = snap.vm_state_size
    while end > 0:
        start = max(0, end - window)
        buf = img.read_vmstate(snap, start, min(end + span, snap.vm_state_size) - start)
        found = find(buf)
        if found is not None:
            return start + found
        end = start
    raise SnapshotRepairError(f"{img.path}: snapshot {snap.name!r} has no {what} section: "
                              "was it taken by a QEMU in record/replay mode?")


def read_section(path: str, tag: str) -> ReplaySection:
    """The replay section of snapshot `tag` in the qcow2 image at path."""
    img = Qcow2(path)
    try:
        snap = img.vmstate_snapshot(tag)
        at = locate(img, snap)
        return decode_section(img.read_vmstate(snap, at, _HEAD + _FIELDS.size), 0)
    finally:
        img.close()


def write_section(path: str, tag: str,
                  change: Callable[[ReplaySection], ReplaySection]) -> tuple[ReplaySection,
                                                                           ReplaySection]:
    """Rewrite snapshot `tag`'s replay section as `change` makes it; return (before, after)."""
    img = Qcow2(path)
    try:
        snap = img.vmstate_snapshot(tag)
        at = locate(img, snap)
        before = decode_section(img.read_vmstate(snap, at, _HEAD + _FIELDS.size), 0)
        after = change(before)
        img.write_vmstate(snap, at + _HEAD, encode_fields(after))
        return before, after
    finally:
        img.close()


def vmstate_chunks(path: str, tag: str, size: int = 4 << 20) -> Iterator[bytes]:
    """Snapshot `tag`'s VM state, a migration stream, in pieces of `size` bytes."""
    img = Qcow2(path)
    try:
        snap = img.vmstate_snapshot(tag)
        for at in range(0, snap.vm_state_size, size):
            yield img.read_vmstate(snap, at, min(size, snap.vm_state_size - at))
    finally:
        img.close()


def repair(path: str, tag: str) -> tuple[ReplaySection, ReplaySection]:
    """Rewrite snapshot `tag`'s replay section as a fresh recording's; return (before, after)."""
    return write_section(path, tag, ReplaySection.fresh_recording)
