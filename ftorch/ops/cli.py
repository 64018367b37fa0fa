"""ftorch: the operator's command line.

Exit codes: 0 ok, 1 operation failed, 2 bad config or usage, 3 unsupported QEMU version,
4 an agent could not be reached.
"""
from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ftorch.config import PairConfig, load
from ftorch.errors import ConfigError, FtorchError
from ftorch.host import lab as lab_mod
from ftorch.ops import pair as pair_ops
from ftorch.ops import watch
from ftorch.ops.pair import PairStatus
from ftorch.status import SideStatus

app = typer.Typer(help="Fault-tolerant VMs on QEMU record/replay: a primary records, a backup "
                       "replays its log a short way behind.", no_args_is_help=True,
                  add_completion=False, rich_markup_mode="markdown")
lab_app = typer.Typer(help="The one-machine lab: namespaces standing for hosts A, B and a client.",
                      no_args_is_help=True)
agent_app = typer.Typer(help="Run an agent (started by `ftorch up`; not for direct use).",
                        no_args_is_help=True)
debug_app = typer.Typer(help="Fault injection for tests (the pair's config must set "
                             "debug.faults).", no_args_is_help=True)
app.add_typer(lab_app, name="lab")
app.add_typer(agent_app, name="agent", hidden=True)
app.add_typer(debug_app, name="debug", hidden=True)
console = Console()
err = Console(stderr=True)


def _fail(e: FtorchError) -> None:
    # one line, never wrapped: operators grep logs and scripts match on it
    err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
    raise typer.Exit(e.exit_code)


def _config(path: str) -> PairConfig:
    try:
        return load(path)
    except FtorchError as e:
        _fail(e)
        raise  # unreachable


def _emit(data: Any, as_json: bool, render) -> None:
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        render(data)


@lab_app.command("up")
def lab_up() -> None:
    """Create the lab: host namespaces with their sshd, a client, the operator's namespace,
    the LAN and management bridges, keys, a Prometheus scraping the agents (ops/prometheus/)
    and an NFS server for the arbiter (nfs-ganesha at nfs://10.77.0.50/ftorch); start
    libvirtd/virtlogd if needed. Idempotent."""
    try:
        lab_mod.up()
    except FtorchError as e:
        _fail(e)
    console.print("lab is up: hosts ftorch-a (10.77.0.1, ssh 10.77.1.1), ftorch-b (10.77.0.2, "
                  "ssh 10.77.1.2), client ftorch-client (10.77.0.100), Prometheus "
                  f"{lab_mod.prometheus_url()} in ftorch-mon"
                  + (f", its UI also at {ui}" if (ui := lab_mod.labprom.local_url()) else "")
                  + f"; the arbiter's NFS server {lab_mod.NFS.url} in {lab_mod.NFS_NS}")


@lab_app.command("down")
def lab_down() -> None:
    """Stop the lab's sshd, Prometheus and NFS server; remove every lab namespace and link."""
    try:
        lab_mod.down()
    except FtorchError as e:
        _fail(e)
    console.print("lab is down")


@lab_app.command("status")
def lab_status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Show which lab namespaces exist, and where the lab's Prometheus and NFS server (the
    arbiter's storage) answer."""
    _emit(lab_mod.status(), as_json,
          lambda d: [*(console.print(f"{ns}: {'present' if ok else 'absent'}")
                       for ns, ok in d["namespaces"].items()),
                     console.print(f"prometheus: {d['prometheus'] or 'not running'}"
                                   + (f" (UI also at {d['prometheus_local']})"
                                      if d["prometheus_local"] else "")),
                     console.print(f"nfs: {d['nfs'] or 'not running'}")])


@app.command()
def up(config: str = typer.Argument(..., help="The pair's YAML config."),
       wait: bool = typer.Option(True, help="Wait until the backup is replaying."),
       timeout: float = typer.Option(180, help="Seconds to wait for the backup."),
       unprotected: bool = typer.Option(False, "--unprotected",
                                        help="Record on host A only; no backup."),
       plain: bool = typer.Option(False, "--plain", hidden=True,
                                  help="No record/replay at all (benchmark baseline).")) -> None:
    """Start a protected pair: host A records the guest, host B replays its log.

    Reaches both hosts over SSH (the config's `ssh` section): checks their QEMU, refuses if the
    pair already runs, sends each a fresh copy of the guest image and starts its agent.

    Example: ftorch lab up && ftorch up examples/lab.yaml && ftorch status examples/lab.yaml
    """
    cfg = _config(config)
    mode = "plain" if plain else "unprotected" if unprotected else "protected"
    try:
        pair_ops.up(cfg, wait, timeout, mode)
    except FtorchError as e:
        _fail(e)
    console.print(f"pair {cfg.pair} is up: primary on host a"
                  + (", backup on host b" if mode == "protected" else f" ({mode}, no backup)"))


def _row(key: str, s: SideStatus) -> tuple[str, ...]:
    gen = s.failover.generation if s.failover else None
    lag_s = s.backup.lag_seconds if s.backup else None
    ch = s.channel
    # a lag is the backup's distance behind: none for a guest recording alone
    behind = s.lag_instructions if s.backup or s.mode == "protected" else None
    live = s.primary or s.backup
    return (key, s.role, "" if gen is None else str(gen), s.guest,
            f"{s.icount / 1e6:.1f}" if live else "",
            f"{lag_s:.3f}" if isinstance(lag_s, float) else "",
            f"{behind / 1e6:.2f}" if behind is not None else "",
            ch.state if ch else "", f"{ch.acked_offset / 2**20:.1f}" if ch else "")


def status_table(data: PairStatus, title: str = "") -> Table:
    """The pair's status as a table that fits 80 columns (counts in millions)."""
    t = Table(title=title or f"pair {data.pair}", box=None, pad_edge=False)
    for col, just in (("host", "left"), ("role", "left"), ("gen", "right"), ("guest", "left"),
                      ("icount M", "right"), ("lag s", "right"), ("lag M", "right"),
                      ("channel", "left"), ("acked MiB", "right")):
        t.add_column(col, justify=just, no_wrap=True)
    for key, s in data.hosts.items():
        t.add_row(*_row(key, s))
    return t


def status_notes(data: PairStatus) -> list[str]:
    """What the table cannot show: a full disk or another limit reached, strangers refused on
    the channel."""
    notes = []
    for key, h in data.hosts.items():
        if h.guard and h.guard.tripped:
            notes.append(f"host {key}: {h.guard.tripped}: {h.guard.action}")
        hold = h.primary.hold if h.primary else None
        if hold and hold.holding:
            notes.append(f"host {key}: the guest's inbound frames wait: its backup trails "
                         f"past the {hold.bound_s:g} s bound")
        thr = h.primary.throttle if h.primary else None
        if thr and thr.slowed:
            notes.append(f"host {key}: the guest is slowed ({thr.share:.0%} frozen) to keep "
                         f"its backup within {thr.bound_s:g} s")
        ch = h.channel
        if ch and ch.refused_peers:   # strangers on the LAN, or a peer with another credential
            notes.append(f"host {key}: refused {ch.refused_peers} channel connection(s) "
                         f"without the pair's credential; last: {ch.last_refused}")
    return notes


def _view(data: PairStatus) -> list[Any]:
    """The table, its notes and a line for each host that did not answer."""
    return [status_table(data), *(Text(line) for line in status_notes(data)),
            *(Text.assemble(("error: ", "red"), h.error) for h in data.hosts.values()
              if not h.reachable)]


@app.command()
def status(config: str = typer.Argument(..., help="The pair's YAML config."),
           as_json: bool = typer.Option(False, "--json", help="Machine-readable output (with "
                                        "--watch: one JSON object a line)."),
           watch_: bool = typer.Option(False, "--watch", "-w", help="Refresh in place until "
                                       "Ctrl-C, with each side's lag as a sparkline."),
           interval: float = typer.Option(2.0, "--interval", min=0.2, help="Seconds between "
                                          "refreshes with --watch."),
           count: int = typer.Option(0, "--count", hidden=True,
                                     help="Stop --watch after this many refreshes.")) -> None:
    """Each side's role, lag and channel, asked of its agent over SSH. Exit 4 if one is down.

    Columns: role, generation, guest state, instruction count (millions), lag (seconds and
    millions of instructions), channel state, log acknowledged (MiB). A host whose agent does
    not answer gets one line saying why (SSH refused, host key mismatch, agent not running).
    With --watch the view refreshes until Ctrl-C (exit 0) and a host that stops answering
    stays on screen with its error.

    Example: ftorch status examples/lab.yaml --watch --interval 1
    """
    cfg = _config(config)
    if watch_:
        watch.watch(lambda: pair_ops.status(cfg), _view, console, interval, count, as_json)
        return
    data = pair_ops.status(cfg)
    if as_json:
        print(json.dumps(data.to_json(), indent=2, sort_keys=True))
    else:
        console.print(status_table(data))
        for line in status_notes(data):
            console.print(escape(line), highlight=False)   # wrapped to the terminal
    down = [h for h in data.hosts.values() if not h.reachable]
    for h in down:
        err.print(f"[red]error:[/red] {escape(h.error)}", highlight=False, soft_wrap=True)
    if down:
        raise typer.Exit(4)


@app.command()
def down(config: str = typer.Argument(..., help="The pair's YAML config."),
         timeout: float = typer.Option(300, help="Seconds to let the backup finish replaying."),
         force: bool = typer.Option(False, "--force", help="Kill both sides at once."),
         as_json: bool = typer.Option(False, "--json", help="Machine-readable summary.")) -> None:
    """Stop the pair: the primary shuts down cleanly, the backup replays to the end, both quit.

    Idempotent: a pair already (partly) down is finished off without error.
    """
    cfg = _config(config)
    try:
        result = pair_ops.down(cfg, timeout, force)
    except FtorchError as e:
        _fail(e)
    _emit(result, as_json, lambda d: console.print(
        f"pair {cfg.pair} is down" + (f"; backup replayed to icount {d['backup']['icount']}"
                                      if "backup" in d else "")))


@app.command()
def logs(config: str = typer.Argument(..., help="The pair's YAML config."),
         host: str = typer.Argument(..., help="a or b"),
         lines: int = typer.Option(40, "--lines", "-n", help="How many lines, from the end."),
         which: str = typer.Option("agent", help="agent (agent.log), previous (the last agent's "
                                                 "log, agent.log.1), serial (the guest's "
                                                 "console) or standby-serial (its console "
                                                 "from a go-live until the next clone)")) -> None:
    """Show the end of a host's agent log (or the guest's serial console), read over SSH.

    Example: ftorch logs examples/lab.yaml b -n 20
    """
    from ftorch.rpc.hosts import Hosts, pair_dir
    cfg = _config(config)
    files = {"agent": "agent.log", "previous": "agent.log.1", "serial": "serial.log",
             "standby-serial": "serial-standby.log"}
    if host not in cfg.hosts or which not in files:
        _fail(ConfigError(f"host must be one of {', '.join(cfg.hosts)} and --which one of "
                          f"{', '.join(files)}"))
    try:
        out = Hosts(cfg)(host).tail(f"{pair_dir(cfg, host)}/{files[which]}", lines)
    except FtorchError as e:
        _fail(e)
    for line in out:
        print(line)


@app.command()
def failover(config: str = typer.Argument(..., help="The pair's YAML config."),
             timeout: float = typer.Option(60, help="Seconds for each side's part."),
             as_json: bool = typer.Option(False, "--json", help="Machine-readable summary.")) -> None:
    """Planned switch: the backup becomes the live primary; nothing is lost.

    The primary pauses its guest and hands the rest of its log to the backup; the backup claims
    the pair (generation + 1) and goes live where the primary paused, with the guest's disk,
    memory and TCP connections; the old primary then stops. It first waits (up to --timeout)
    until the backup trails by no more than lag.bound_s, since the guest's pause lasts as long
    as the backup takes to replay what it trails; clients then see one pause of about that
    plus the go-live (under a second on the lab). The pair is unprotected afterwards until
    re-protected. Refused (exit 1) unless the pair is protected and the backup comes within
    the bound.

    Example: ftorch failover examples/lab.yaml && ftorch status examples/lab.yaml
    """
    from ftorch.ops.switch import failover as do_failover
    cfg = _config(config)
    try:
        result = do_failover(cfg, timeout)
    except FtorchError as e:
        _fail(e)
    _emit(result, as_json, lambda d: console.print(
        f"pair {d['pair']} is live on host {d['to']} (generation {d['generation']}); the guest "
        f"was paused {d['paused_s']:.2f} s (go-live: replay {d['replay_s']:.2f} s, save "
        f"{d['save_s']:.2f} s, start {d['start_s']:.2f} s), after {d['waited_s']:.1f} s "
        f"waiting for the backup to come within the bound ({d['lag_s']:.2f} s behind)"))


@app.command()
def protect(config: str = typer.Argument(..., help="The pair's YAML config."),
            as_json: bool = typer.Option(False, "--json", help="Machine-readable summary.")) -> None:
    """Protect a guest that runs alone: clone it into a new backup on the other host.

    The guest pauses once, for a snapshot and a local copy of its image (the pause is
    reported); the image then goes to the other host while the guest runs, and the backup
    replays from the snapshot. Protection counts once the backup has replayed past the
    snapshot; on any failure the guest runs on unprotected and the error says why (exit 1).
    After a failover the agents do this by themselves (failover.reprotect).

    Example: ftorch up examples/lab.yaml --unprotected && ftorch protect examples/lab.yaml
    """
    cfg = _config(config)
    try:
        live = pair_ops.live_side(cfg)
        result = pair_ops.agent_call(cfg, live, "protect", timeout=900)
    except FtorchError as e:
        _fail(e)
    result.pop("ok", None)
    _emit(result, as_json, lambda d: console.print(
        f"pair {cfg.pair} is protected: backup on host {d['peer']} replays from snapshot "
        f"{d['tag']} (icount {d['icount']}); guest paused {d['pause_s'] * 1e3:.0f} ms, image "
        f"{d['image_bytes'] >> 20} MiB copied in {d['copy_s']:.1f} s, protected "
        f"{d['passed_s']:.1f} s after the clone"))


@agent_app.command("run")
def agent_run(config: str, host: str = typer.Option(..., help="a or b"),
              role: str = typer.Option(..., help="primary or backup"),
              mode: str = typer.Option("protected", help="primary only: protected, unprotected, "
                                                         "plain")) -> None:
    """Run this host's agent in the foreground (logs to stderr with timestamps)."""
    from ftorch.agent.daemon import main
    raise typer.Exit(main(config, host, role, mode))


@debug_app.command("corrupt-frame")
def corrupt_frame(config: str) -> None:
    """Make the primary corrupt its next DATA frame on the wire (the backup must reject it)."""
    cfg = _config(config)
    try:
        pair_ops.agent_call(cfg, "a", "inject", what="corrupt-frame")
    except FtorchError as e:
        _fail(e)
    console.print("the next DATA frame will be corrupted")


@debug_app.command("truncate-frame")
def truncate_frame(config: str) -> None:
    """Make the primary send half of its next DATA frame and then go mute, as a host dying in
    mid-send would (the backup must drop the partial frame). Prints the frame's offset."""
    cfg = _config(config)
    try:
        r = pair_ops.agent_call(cfg, "a", "inject", timeout=40, what="truncate-frame")
    except FtorchError as e:
        _fail(e)
    console.print(f"sent {r['sent']} of {r['length']} bytes of the frame at offset {r['offset']}")


@debug_app.command("clone-fault")
def clone_fault(config: str, fault: str = typer.Argument(..., help="missing-snapshot, "
                                                                   "mismatched-snapshot, "
                                                                   "short-ram or no-standby"),
                host: str = typer.Option("a", help="the host whose next clone is spoiled")) -> None:
    """Spoil the image or RAM the next `ftorch protect` ships, as a stale or mixed-up copy would
    be (the backup must refuse it and the guest run on unprotected); or make the next clone go
    without a waiting recorder (no-standby: it restarts the recorder, a longer pause)."""
    cfg = _config(config)
    try:
        pair_ops.agent_call(cfg, host, "inject", what="clone-fault", fault=fault)
    except FtorchError as e:
        _fail(e)
    console.print(f"the next clone from host {host} ships with a {fault}")


@debug_app.command("hold-acks")
def hold_acks(config: str, on: bool = typer.Argument(..., help="true: stop acking; false: resume")) -> None:
    """Make the backup receive and spool the log without acknowledging it (the primary's output
    gate must then hold every outbound frame)."""
    cfg = _config(config)
    try:
        backup = next((k for k in ("a", "b") if pair_ops.try_status(cfg, k).role == "backup"),
                      None)
        if backup is None:
            raise FtorchError(f"no backup of pair {cfg.pair} runs (`ftorch status {config}`)")
        pair_ops.agent_call(cfg, backup, "hold-acks", on=on)
    except FtorchError as e:
        _fail(e)
    console.print(f"backup acks {'held' if on else 'resumed'}")


def main() -> None:
    app(prog_name="ftorch")


if __name__ == "__main__":
    sys.exit(main())
