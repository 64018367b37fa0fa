"""The domains a host runs for a pair: the backup's replay and the standby recorder beside it."""
from pathlib import Path

from ftorch.config import load
from ftorch.host.layout import domain_names, guest_spec, paths, ram_file
from ftorch.rr.domain import Mode, qemu_args, render

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lab.yaml"


def arg_after(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def test_the_standby_recorder_waits_for_a_state_beside_the_replay():
    cfg = load(EXAMPLE)
    p = paths(cfg, "b")
    replay = guest_spec(cfg, "b", Mode.REPLAY)
    standby = guest_spec(cfg, "b", Mode.RECORD, "/shim.so", standby=True, incoming=True)
    # two domains at once on host b: their names and NIC sockets must differ
    assert (replay.name, standby.name) == domain_names(cfg, "b")
    assert replay.net_socket == str(p.net_sock) != standby.net_socket == str(p.standby_net_sock)
    # the same guest and disk; the standby records into its slot's log, the replay reads its pipe
    assert replay.disk == standby.disk
    # libvirt's virtlogd opens a serial file for one domain at a time
    assert (replay.serial_log, standby.serial_log) == (str(p.serial), str(p.standby_serial))
    assert (replay.rr_log, standby.rr_log) == (str(p.fifo), str(p.standby_rr_log))
    args = qemu_args(standby)
    assert arg_after(args, "-incoming") == "defer" and "-loadvm" not in args
    assert "rr=record" in arg_after(args, "-icount")
    assert "-incoming" not in qemu_args(replay)
    # the shim flushes the log when the guest sends on the standby's own socket
    assert standby.env["FTORCH_NET_SOCK"] == str(p.standby_net_sock)
    assert '<qemu:arg value="-incoming"/>' in render(standby)


def test_a_clone_restart_records_under_the_usual_name():
    cfg = load(EXAMPLE)
    spec = guest_spec(cfg, "a", Mode.RECORD, "/shim.so", loadvm="ftorch-clone-base")
    assert spec.name == domain_names(cfg, "a")[0] and spec.incoming is None
    assert arg_after(qemu_args(spec), "-loadvm") == "ftorch-clone-base"


def test_a_recorder_and_the_one_waiting_beside_it_write_their_own_files():
    """The waiting recorder truncates its log when it starts, beside a guest that records:
    the two slots must not share a log, a NIC socket or a console."""
    cfg = load(EXAMPLE)
    running = guest_spec(cfg, "a", Mode.RECORD, "/shim.so", standby=True)
    waiting = guest_spec(cfg, "a", Mode.RECORD, "/shim.so", standby=False, incoming=True)
    for field in ("name", "rr_log", "net_socket", "serial_log"):
        assert getattr(running, field) != getattr(waiting, field), field
    assert running.env["FTORCH_RR_LOG"] == running.rr_log != waiting.env["FTORCH_RR_LOG"]
    assert ram_backend(qemu_args(running)) == ram_backend(qemu_args(waiting))
    assert running.incoming is None and waiting.incoming == "defer"


def ram_backend(args: list[str]) -> str:
    """The -object that gives the machine its RAM (the one -machine memory-backend names)."""
    machine = [a for i, a in enumerate(args) if i and args[i - 1] == "-machine"]
    backend = machine[-1].split("memory-backend=")[1]
    objects = [a for i, a in enumerate(args) if i and args[i - 1] == "-object"]
    return next(o for o in objects if f"id={backend}," in o)


def test_the_replay_and_its_standby_map_one_ram_file_and_every_state_names_its_ram_alike():
    cfg = load(EXAMPLE)
    replay = ram_backend(qemu_args(guest_spec(cfg, "b", Mode.REPLAY)))
    standby = ram_backend(qemu_args(guest_spec(cfg, "b", Mode.RECORD, "/shim.so", standby=True)))
    recorder = ram_backend(qemu_args(guest_spec(cfg, "b", Mode.RECORD, "/shim.so")))
    # a go-live leaves the RAM out of its state: the standby must map the replay's very file,
    # shared, and in tmpfs (a file on disk would page the guest's RAM out to it)
    assert replay == standby
    assert f"mem-path={ram_file(cfg, 'b')}," in replay and replay.endswith(",share=on")
    assert str(ram_file(cfg, "b")).startswith("/dev/shm/")
    assert ram_file(cfg, "a") != ram_file(cfg, "b")
    # so does a recorder in either slot (a clone's first snapshot leaves the RAM out too);
    # a saved state names its RAM blocks: a clone's snapshot from the recorder loads in a
    # replay, a go-live's state in a recorder, only if all name it the same
    assert recorder == replay
    assert replay.startswith("memory-backend-file,id=ram0,")
    assert f"size={cfg.guest.memory_mib}M" in recorder and f"size={cfg.guest.memory_mib}M" in replay
    # the baseline runs as libvirt runs a guest
    assert "-machine" not in qemu_args(guest_spec(cfg, "a", Mode.PLAIN))


def test_both_sides_count_time_with_the_configured_shift():
    cfg = load(EXAMPLE)
    assert "shift=auto," in arg_after(qemu_args(guest_spec(cfg, "a", Mode.RECORD)), "-icount")
    from dataclasses import replace
    fixed = replace(cfg, replay=replace(cfg.replay, icount_shift="3"))
    for key, mode in (("a", Mode.RECORD), ("b", Mode.REPLAY)):
        assert arg_after(qemu_args(guest_spec(fixed, key, mode)), "-icount").startswith("shift=3,")
