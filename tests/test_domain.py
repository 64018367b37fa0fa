"""The domains a host runs for a pair: the backup's replay and the standby recorder beside it."""
from pathlib import Path

from ftorch.config import load
from ftorch.host.layout import domain_names, guest_spec, paths
from ftorch.rr.domain import Mode, qemu_args, render

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lab.yaml"


def arg_after(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def test_the_standby_recorder_waits_for_a_state_beside_the_replay():
    cfg = load(EXAMPLE)
    p = paths(cfg, "b")
    replay = guest_spec(cfg, "b", Mode.REPLAY)
    standby = guest_spec(cfg, "b", Mode.RECORD, "/shim.so", standby=True)
    # two domains at once on host b: their names and NIC sockets must differ
    assert (replay.name, standby.name) == domain_names(cfg, "b")
    assert replay.net_socket == str(p.net_sock) != standby.net_socket == str(p.standby_net_sock)
    # the same guest and disk; the standby records into this host's log, the replay reads its pipe
    assert replay.disk == standby.disk
    # libvirt's virtlogd opens a serial file for one domain at a time
    assert (replay.serial_log, standby.serial_log) == (str(p.serial), str(p.standby_serial))
    assert (replay.rr_log, standby.rr_log) == (str(p.fifo), str(p.rr_log))
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
