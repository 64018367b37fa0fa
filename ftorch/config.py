"""The YAML config of one protected pair: load, validate, and fail with one clear line."""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ftorch.errors import ConfigError

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
MAC_RE = re.compile(r"^52:54:00(:[0-9a-f]{2}){3}$")


@dataclass(frozen=True)
class HostSsh:
    address: str = ""     # where sshd listens (a management network); default: the host's address
    port: int = 22
    user: str = "root"


@dataclass(frozen=True)
class HostConfig:
    name: str
    address: str          # the agent's address on the LAN (channel endpoint)
    dir: str = ""         # this host's local disk, as this host sees it: images, logs, sockets
    # the QEMU this host runs the guest with; both hosts must run the same version
    emulator: str = "/usr/bin/qemu-system-x86_64"
    tap: str = "ftap0"    # the tap device on the guest's LAN that the guest's NIC is bridged to
    ssh: HostSsh = field(default_factory=HostSsh)

    @property
    def ssh_address(self) -> str:
        return self.ssh.address or self.address

    @property
    def path(self) -> Path:
        return Path(self.dir)


@dataclass(frozen=True)
class GuestConfig:
    image: str
    ip: str
    mac: str = "52:54:00:f7:00:01"
    memory_mib: int = 128
    cmdline_extra: str = "nohz=off"
    service_port: int = 7000


@dataclass(frozen=True)
class ChannelConfig:
    port: int = 7400
    # Each side sends a frame at least every heartbeat_s; a peer silent for timeout_s is taken
    # for dead (the arbiter race). Detection costs timeout_s of the client's stall at a failover;
    # a false one costs a failover (never two live copies). bench/results/latest.md gives the
    # longest silence seen under the bench's heaviest load, against this timeout.
    heartbeat_s: float = 0.05
    timeout_s: float = 0.5
    frame_max_bytes: int = 65536


@dataclass(frozen=True)
class ReplayConfig:
    # The backup is held this many instructions short of what it has received: QEMU reads the
    # next event when it finishes a batch, so it must stop inside the last one received. 1000
    # is 1-5 ms of an idle guest (10000 cost ~25 ms of idle lag: docs/qemu-notes.md).
    margin_instructions: int = 1000
    # The least time between two steps of the replay control (each a libvirt round trip or
    # two): a burst of chunks makes one step. Steps come on data and on the pause at a break.
    break_interval_ms: float = 5.0
    flush_us: int = 1000
    # Wake the recorder's vCPU when inbound frames or disk completions are queued (the shim's
    # kick, docs/qemu-notes.md): without it they wait up to ~1 s while the guest idles. A busy
    # guest then records faster than its backup replays (~2x on a 2-core host): the lag bound
    # (`lag`) holds it back.
    inbound_kick: bool = True
    # QEMU's -icount shift: "auto" (adaptive: the guest's clock follows the host's) or a fixed
    # 0..10 (one instruction counts 2**shift ns). A fixed shift is for experiments so far
    # (docs/qemu-notes.md: its costs, and the throttle's replay hang it may avoid).
    icount_shift: str = "auto"


@dataclass(frozen=True)
class LagConfig:
    # The backup may trail the primary by this much (seconds between the primary recording a
    # point and the backup replaying it): past it the guest's inbound frames wait until the
    # backup is back under half of it (gate/lagbound.py). A failover replays about this much.
    bound_s: float = 0.5
    # The longest one frame waits, from its arrival: a backup that stops moving does not cut
    # off the clients.
    max_hold_s: float = 0.2
    # Off: the lag is whatever the hosts give (a busy guest's backup can fall seconds behind).
    hold_inbound: bool = True
    # Experimental, off: slow a guest that makes its own work (a batch job, a boot): past half
    # the bound its recorder is frozen for a share of every `throttle_period_s`, growing with
    # the lag up to `max_slowdown` (the guest then runs 5 % of the time), until the backup is
    # back under a quarter of the bound (rr/throttle.py). Do not turn it on for a guest that
    # matters: recordings made under it hung in replay in 3 of 8 lab runs (docs/qemu-notes.md).
    throttle: bool = False
    throttle_period_s: float = 0.1
    max_slowdown: float = 0.95


@dataclass(frozen=True)
class FailoverConfig:
    # On: a silent peer starts the arbiter race (primary goes on alone, or backup goes live).
    # Off: nobody acts; a primary whose backup died then holds its output for ever.
    enabled: bool = True
    # After a failover the live side clones itself onto the peer host as soon as that host can
    # take a backup (no agent of the pair answers there), trying every reprotect_interval_s.
    # Each attempt pauses the guest for about a second (clone.py); off: `ftorch protect` by hand.
    reprotect: bool = True
    reprotect_interval_s: float = 5.0


@dataclass(frozen=True)
class SshConfig:
    """How the operator reaches the hosts, and how an agent reaches its peer (re-protection)."""

    identity: str = "~/.ssh/id_ed25519"        # the operator's private key, on the operator's side
    known_hosts: str = "~/.ssh/known_hosts"    # host keys the operator accepts
    # on each host, relative to its dir: the key its agent reaches the peer with, and the
    # peer's host key
    agent_identity: str = "ssh/id_ed25519"
    agent_known_hosts: str = "ssh/known_hosts"
    connect_timeout_s: float = 5.0
    netns: str = ""       # lab only: the network namespace the operator's connections start from


@dataclass(frozen=True)
class LimitsConfig:
    # Free space each host keeps in its pair folder's filesystem. Below it the primary pauses
    # its guest (nothing is lost; it resumes at twice the reserve) and a backup steps down (the
    # primary then goes on alone, and re-protects once the backup host has room again).
    disk_reserve_mib: int = 64
    # The newest log kept on each host (rr.log on the primary, rx.log on the backup); older log
    # the backup holds is given back to the filesystem, so an idle pair's disk use stays flat.
    log_keep_mib: int = 64
    # Outbound frames the output gate holds at most while the backup acknowledges; more are
    # dropped (the guest's TCP sends them again), never released early.
    gate_frames: int = 4096
    # Frames a backup has received and not yet fed to its QEMU; past it the backup steps down
    # (it cannot keep up) rather than index an ever longer backlog.
    backlog_frames: int = 200_000


@dataclass(frozen=True)
class MetricsConfig:
    # Each agent serves Prometheus metrics on http://ADDRESS:PORT/metrics; ADDRESS empty: the
    # host's LAN address (hosts.<x>.address); port 0: no metrics.
    port: int = 9477
    address: str = ""


@dataclass(frozen=True)
class DebugConfig:
    faults: bool = False  # fault injection (`ftorch debug ...`) for tests; never in production


@dataclass(frozen=True)
class PairConfig:
    pair: str
    guest: GuestConfig
    hosts: dict[str, HostConfig]
    shared_dir: str
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    lag: LagConfig = field(default_factory=LagConfig)
    failover: FailoverConfig = field(default_factory=FailoverConfig)
    ssh: SshConfig = field(default_factory=SshConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    source: str = ""
    text: str = ""        # the YAML as written: what each host's agent is given

    def host(self, key: str) -> HostConfig:
        return self.hosts[key]

    def peer(self, key: str) -> str:
        return "b" if key == "a" else "a"


def _build(cls: type, data: Any, where: str) -> Any:
    """Instantiate a config dataclass from a mapping, naming the bad field on error."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown field (known: {', '.join(known)})")
    kwargs = {}
    for name, f in known.items():
        if name not in data:
            continue
        value = data[name]
        expected = f.type if isinstance(f.type, str) else f.type.__name__
        if expected in ("int", "float") and (isinstance(value, bool) or not isinstance(value, (int, float))
                                             or (expected == "int" and not isinstance(value, int))):
            raise ConfigError(f"{where}.{name}: expected {expected}, got {value!r}")
        if expected == "bool" and not isinstance(value, bool):
            raise ConfigError(f"{where}.{name}: expected true or false, got {value!r}")
        if expected == "str" and not isinstance(value, str):
            raise ConfigError(f"{where}.{name}: expected a string, got {value!r}")
        if expected in NESTED:
            value = _build(NESTED[expected], value, f"{where}.{name}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as e:
        missing = re.findall(r"'(\w+)'", str(e))
        raise ConfigError(f"{where}.{missing[0] if missing else '?'}: required field is missing") from None


NESTED: dict[str, type] = {"HostSsh": HostSsh}


def _positive(value: float, where: str) -> None:
    if value <= 0:
        raise ConfigError(f"{where}: must be positive, got {value}")


def validate(cfg: PairConfig) -> PairConfig:
    """Cross-field checks; returns cfg unchanged or raises ConfigError."""
    if not NAME_RE.match(cfg.pair):
        raise ConfigError(f"pair: {cfg.pair!r} must be lowercase letters, digits and '-', "
                          "starting with a letter, at most 31 characters")
    if set(cfg.hosts) != {"a", "b"}:
        raise ConfigError(f"hosts: needs exactly the two hosts 'a' and 'b', got {sorted(cfg.hosts)}")
    for key, h in cfg.hosts.items():
        try:
            ipaddress.ip_address(h.address)
        except ValueError:
            raise ConfigError(f"hosts.{key}.address: {h.address!r} is not an IP address") from None
        if not h.dir.startswith("/"):
            raise ConfigError(f"hosts.{key}.dir: must be an absolute path, got {h.dir!r}")
        if not 1 <= h.ssh.port <= 65535:
            raise ConfigError(f"hosts.{key}.ssh.port: {h.ssh.port} is not a TCP port")
        if h.ssh.address:
            try:
                ipaddress.ip_address(h.ssh.address)
            except ValueError:
                raise ConfigError(f"hosts.{key}.ssh.address: {h.ssh.address!r} is not an IP "
                                  "address") from None
    _two_hosts(cfg)
    try:
        ipaddress.ip_interface(cfg.guest.ip)
    except ValueError:
        raise ConfigError(f"guest.ip: {cfg.guest.ip!r} is not ADDRESS/PREFIX") from None
    if "/" not in cfg.guest.ip:
        raise ConfigError(f"guest.ip: {cfg.guest.ip!r} needs a prefix length, e.g. 10.77.0.10/24")
    if not MAC_RE.match(cfg.guest.mac):
        raise ConfigError(f"guest.mac: {cfg.guest.mac!r} must be a locally administered "
                          "52:54:00:xx:xx:xx address in lowercase")
    if not 64 <= cfg.guest.memory_mib <= 65536:
        raise ConfigError(f"guest.memory_mib: {cfg.guest.memory_mib} is outside 64..65536")
    if not 1 <= cfg.channel.port <= 65535:
        raise ConfigError(f"channel.port: {cfg.channel.port} is not a TCP port")
    _positive(cfg.channel.heartbeat_s, "channel.heartbeat_s")
    _positive(cfg.channel.timeout_s, "channel.timeout_s")
    _positive(cfg.failover.reprotect_interval_s, "failover.reprotect_interval_s")
    _positive(cfg.ssh.connect_timeout_s, "ssh.connect_timeout_s")
    if cfg.channel.timeout_s < 3 * cfg.channel.heartbeat_s:
        raise ConfigError(f"channel.timeout_s: {cfg.channel.timeout_s} must be at least 3 heartbeats "
                          f"({3 * cfg.channel.heartbeat_s}) or a busy host trips it")
    if not 4096 <= cfg.channel.frame_max_bytes <= 1 << 20:
        raise ConfigError("channel.frame_max_bytes: must be within 4096..1048576")
    _positive(cfg.replay.margin_instructions, "replay.margin_instructions")
    _positive(cfg.replay.break_interval_ms, "replay.break_interval_ms")
    _positive(cfg.lag.bound_s, "lag.bound_s")
    _positive(cfg.lag.max_hold_s, "lag.max_hold_s")
    _positive(cfg.lag.throttle_period_s, "lag.throttle_period_s")
    if not 0 < cfg.lag.max_slowdown < 1:
        raise ConfigError(f"lag.max_slowdown must be above 0 and below 1 (a share of each "
                          f"period the guest is frozen), not {cfg.lag.max_slowdown}")
    if cfg.replay.icount_shift != "auto" and not (cfg.replay.icount_shift.isdigit()
                                                   and int(cfg.replay.icount_shift) <= 10):
        raise ConfigError(f"replay.icount_shift: \"auto\" or a whole number 0..10, got "
                          f"{cfg.replay.icount_shift!r}")
    if cfg.replay.flush_us < 0:
        raise ConfigError(f"replay.flush_us: must be 0 (no flush shim) or positive, "
                          f"got {cfg.replay.flush_us}")
    if cfg.shared_dir.startswith("nfs:"):
        from ftorch.arbiter.nfsclient import NfsUrlError, parse_url
        try:
            parse_url(cfg.shared_dir)
        except NfsUrlError as e:
            raise ConfigError(f"shared_dir: {e}") from None
    elif not cfg.shared_dir.startswith("/"):
        raise ConfigError(f"shared_dir: must be an absolute path (a folder both hosts mount) "
                          f"or nfs://SERVER/EXPORT[/DIR], got {cfg.shared_dir!r}")
    for key, h in sorted(cfg.hosts.items()):
        if not h.emulator.startswith("/"):
            raise ConfigError(f"hosts.{key}.emulator: must be an absolute path, got {h.emulator!r}")
    return cfg


def _two_hosts(cfg: PairConfig) -> None:
    """A primary and its backup on one machine survive no host failure: refuse it."""
    a, b = cfg.hosts["a"], cfg.hosts["b"]
    for what, x, y in (("name", a.name, b.name), ("address", a.address, b.address),
                       ("SSH address", a.ssh_address, b.ssh_address)):
        if x == y:
            raise ConfigError(f"hosts.a and hosts.b have one {what} ({x}): primary and backup "
                              "must run on two hosts, or one host's failure takes both")


def parse(data: Any, source: str = "<config>", text: str = "") -> PairConfig:
    """Build a validated PairConfig from already-loaded YAML data."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    for required in ("pair", "guest", "hosts", "shared_dir"):
        if required not in data:
            raise ConfigError(f"{required}: required field is missing")
    unknown = sorted(set(data) - {f.name for f in fields(PairConfig)} - {"source", "text"})
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown top-level field")
    if not isinstance(data["hosts"], dict):
        raise ConfigError("hosts: expected a mapping of 'a' and 'b'")
    cfg = PairConfig(
        pair=str(data["pair"]),
        guest=_build(GuestConfig, data["guest"], "guest"),
        hosts={str(k): _build(HostConfig, v, f"hosts.{k}") for k, v in data["hosts"].items()},
        shared_dir=str(data["shared_dir"]),
        channel=_build(ChannelConfig, data.get("channel", {}), "channel"),
        replay=_build(ReplayConfig, data.get("replay", {}), "replay"),
        lag=_build(LagConfig, data.get("lag", {}), "lag"),
        failover=_build(FailoverConfig, data.get("failover", {}), "failover"),
        ssh=_build(SshConfig, data.get("ssh", {}), "ssh"),
        limits=_build(LimitsConfig, data.get("limits", {}), "limits"),
        metrics=_build(MetricsConfig, data.get("metrics", {}), "metrics"),
        debug=_build(DebugConfig, data.get("debug", {}), "debug"),
        source=source,
        text=text,
    )
    return validate(cfg)


def load(path: str | Path) -> PairConfig:
    """Load and validate a pair config file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}: not valid YAML{at}: {getattr(e, 'problem', e)}") from None
    return parse(data, str(p.resolve()), text)
