"""The lab's Prometheus: a real server (Debian's `prometheus`) in a monitoring namespace on the
LAN, running the repo's own scrape config and rules (ops/prometheus/) against the lab's agents.

Its data (from `lab up` on: a new lab has no history) and log are in the lab folder; `ftorch
lab down` stops it. The web UI and API are at
http://10.77.0.200:9090 inside the lab (`fetch` reaches them from outside the namespace), and
at http://127.0.0.1:9090 on this machine through a relay whose connections enter the
monitoring namespace (`relay`), so a browser (or `ssh -L 9090:127.0.0.1:9090`) can open it.
"""
from __future__ import annotations

import ctypes
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from ftorch.config import MetricsConfig
from ftorch.errors import LabError
from ftorch.host.labssh import LAB_ROOT

OPS = Path(__file__).resolve().parents[2] / "ops" / "prometheus"
HOME = LAB_ROOT / "prometheus"
PROMETHEUS = "/usr/bin/prometheus"
PORT = 9090
LOCAL = ("127.0.0.1", 9090)    # the relay's end on this machine
CLONE_NEWNET = 0x40000000
FETCH = """
import sys, urllib.error, urllib.request
try:
    sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).read().decode())
except urllib.error.HTTPError as e:   # the server's own words: Prometheus explains in the body
    sys.exit(f"{e}: {e.read().decode(errors='replace').strip()}")
"""


def fetch(netns: str, url: str, timeout: float = 10) -> str:
    """GET url from inside network namespace netns (the lab's addresses live only there)."""
    p = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", FETCH, url, str(timeout)],
                       capture_output=True, text=True, timeout=timeout + 20)
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["no error output"])[-1]
        raise LabError(f"GET {url} from namespace {netns} failed: {last}")
    return p.stdout


def pid(name: str = "prometheus") -> int | None:
    try:
        n = int((HOME / f"{name}.pid").read_text())
        os.kill(n, 0)
        return n
    except (OSError, ValueError):
        return None


def _install_config(targets: list[str]) -> Path:
    """The repo's prometheus.yml and rules, with a targets file naming the lab's agents."""
    if not (OPS / "prometheus.yml").exists():
        raise LabError(f"{OPS}/prometheus.yml missing: the lab runs from a clone of the repo")
    conf = HOME / "etc"
    shutil.rmtree(conf, ignore_errors=True)
    shutil.copytree(OPS, conf, ignore=shutil.ignore_patterns("tests", "example.yml"))
    (conf / "targets" / "lab.yml").write_text(
        json.dumps([{"targets": targets, "labels": {"site": "lab"}}]) + "\n")
    return conf / "prometheus.yml"


def start(netns: str, address: str, hosts: list[str]) -> str:
    """Start Prometheus in netns listening on address:PORT, scraping each host's agent at its
    default metrics port; return its URL. A running one is left alone."""
    url = f"http://{address}:{PORT}"
    if pid() is not None:
        return url
    if not os.path.exists(PROMETHEUS):
        raise LabError(f"{PROMETHEUS} missing: install Debian's prometheus (`make setup`)")
    conf = _install_config([f"{h}:{MetricsConfig().port}" for h in hosts])
    # a new lab starts with no history: an earlier lab's pairs (same names, same addresses)
    # would otherwise show in its queries, alerts and plots
    shutil.rmtree(HOME / "data", ignore_errors=True)
    (HOME / "data").mkdir(parents=True)
    with open(HOME / "prometheus.log", "ab") as out:
        p = subprocess.Popen(
            ["ip", "netns", "exec", netns, PROMETHEUS, f"--config.file={conf}",
             f"--storage.tsdb.path={HOME / 'data'}",
             f"--web.listen-address={address}:{PORT}", "--web.console.templates=",
             "--web.console.libraries="],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    (HOME / "prometheus.pid").write_text(f"{p.pid}\n")   # `ip netns exec` execs: same pid
    deadline = time.monotonic() + 60
    while True:
        try:
            fetch(netns, f"{url}/-/ready", timeout=2)
            return url
        except LabError as e:
            if p.poll() is not None or time.monotonic() > deadline:
                stop()
                raise LabError(f"Prometheus did not become ready ({e}); see "
                               f"{HOME / 'prometheus.log'}") from None
            time.sleep(0.2)


def stop() -> None:
    for name in ("relay", "prometheus"):
        n = pid(name)
        if n is not None:
            os.kill(n, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while pid(name) is not None:
                if time.monotonic() > deadline:
                    os.kill(n, signal.SIGKILL)
                    break
                time.sleep(0.05)
        (HOME / f"{name}.pid").unlink(missing_ok=True)


def start_relay(netns: str, address: str) -> str | None:
    """Serve the UI at LOCAL too; None (and the lab goes on) if that port is taken."""
    local = f"http://{LOCAL[0]}:{LOCAL[1]}"
    if pid("relay") is not None:
        return local
    try:   # fail here, in one line, rather than in a detached process
        socket.create_server(LOCAL).close()
    except OSError as e:
        log_line = f"{time.strftime('%FT%T')} relay: {LOCAL[0]}:{LOCAL[1]} unavailable: {e}\n"
        with open(HOME / "prometheus.log", "a") as f:
            f.write(log_line)
        return None
    with open(HOME / "relay.log", "ab") as out:
        p = subprocess.Popen([sys.executable, "-m", "ftorch.host.labprom", netns, address],
                             stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                             start_new_session=True)
    (HOME / "relay.pid").write_text(f"{p.pid}\n")
    return local


def local_url() -> str | None:
    return f"http://{LOCAL[0]}:{LOCAL[1]}" if pid("relay") is not None else None


def relay(netns: str, address: str) -> None:
    """Accept on LOCAL in this namespace; carry each connection to address:PORT in netns."""
    server = socket.create_server(LOCAL)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_carry, args=(conn, netns, address), daemon=True).start()


def _carry(conn: socket.socket, netns: str, address: str) -> None:
    # setns moves only this thread into the namespace: the sockets it opens live there
    libc = ctypes.CDLL(None, use_errno=True)
    with open(f"/run/netns/{netns}") as ns:
        entered = libc.setns(ns.fileno(), CLONE_NEWNET) == 0
    try:
        up = socket.create_connection((address, PORT), timeout=10) if entered else None
    except OSError:
        up = None
    if up is None:
        conn.close()
        return
    ends = {conn: up, up: conn}
    try:
        while True:
            ready = select.select(list(ends), [], [], 300)[0]
            if not ready:
                return          # a browser's idle keep-alive: let it reconnect
            for s in ready:
                data = s.recv(65536)
                if not data:
                    return
                ends[s].sendall(data)
    except OSError:
        pass
    finally:
        conn.close()
        up.close()


if __name__ == "__main__":
    relay(sys.argv[1], sys.argv[2])


def query(netns: str, url: str, promql: str, at: float | None = None,
          range_s: float | None = None, step_s: float = 5) -> list[dict[str, Any]]:
    """The result of a PromQL query through the HTTP API (an instant one, or over the last
    range_s seconds); a query Prometheus refuses raises with its error."""
    now = at if at is not None else time.time()
    if range_s is None:
        path, args = "query", {"query": promql, "time": f"{now:.3f}"}
    else:
        path, args = "query_range", {"query": promql, "start": f"{now - range_s:.3f}",
                                     "end": f"{now:.3f}", "step": f"{step_s:g}"}
    try:
        reply = json.loads(fetch(netns, f"{url}/api/v1/{path}?{urlencode(args)}"))
    except LabError as e:
        raise LabError(f"PromQL `{promql}`: {e}") from None
    if reply.get("status") != "success":
        raise LabError(f"PromQL `{promql}`: {reply.get('error', reply)}")
    return reply["data"]["result"]
