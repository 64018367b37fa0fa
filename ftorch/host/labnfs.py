"""A user-space NFS server for the lab's arbiter: Debian's nfs-ganesha (VFS backend) in a
network namespace of its own, exporting one folder over NFSv4 only.

The lab's kernel has no NFS client, so the agents reach it with libnfs (arbiter/nfsclient.py),
as `shared_dir: nfs://ADDRESS/ftorch/...`. NFSv4 over TCP needs no rpcbind; NLM, RQUOTA and
UDP are off, and `Graceless` skips the 90 s grace period after a start (nothing to recover: the
arbiter holds no NFS locks). Tests stop, freeze (SIGSTOP) and thaw it to play a dead or hung
storage server.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ftorch.errors import LabError

GANESHA = "/usr/bin/ganesha.nfsd"
EXPORT = "/ftorch"      # the NFSv4 pseudo path clients mount
CONFIG = """\
NFS_CORE_PARAM {{ Protocols = 4; Enable_UDP = false; Enable_NLM = false; Enable_RQUOTA = false; }}
NFSV4 {{ Graceless = true; RecoveryRoot = {home}/recovery; }}
EXPORT {{
  Export_Id = 1; Path = {export}; Pseudo = {pseudo}; Access_Type = RW; Squash = No_Root_Squash;
  Protocols = 4; Transports = TCP; SecType = sys; Attr_Expiration_Time = 0;
  FSAL {{ Name = VFS; }}
}}
"""
PROBE = """
import sys
from ftorch.arbiter.nfsclient import NfsSession
NfsSession(sys.argv[1], sys.argv[2], 1).close()
"""


@dataclass(frozen=True)
class NfsServer:
    netns: str
    address: str
    home: Path           # config, log, pid, recovery state and the exported folder

    @property
    def export_dir(self) -> Path:
        return self.home / "export"

    @property
    def url(self) -> str:
        return f"nfs://{self.address}{EXPORT}"

    def pid(self) -> int | None:
        """The server's pid while it runs (an exited child of this process is reaped here)."""
        try:
            n = int((self.home / "ganesha.pid").read_text())
            state = Path(f"/proc/{n}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, ValueError, IndexError):
            return None
        if state == "Z":
            try:
                os.waitpid(n, os.WNOHANG)
            except ChildProcessError:   # another process's child: its parent reaps it
                pass
            return None
        return n

    def start(self, timeout: float = 30) -> str:
        """Start the server (a running one is left alone); return its nfs:// URL once it
        serves a mount."""
        if self.pid() is not None:
            return self.url
        if not os.path.exists(GANESHA):
            raise LabError(f"{GANESHA} missing: install Debian's nfs-ganesha and "
                           "nfs-ganesha-vfs (`make setup`)")
        for d in (self.export_dir, self.home / "recovery"):
            d.mkdir(parents=True, exist_ok=True)
        conf = self.home / "ganesha.conf"
        conf.write_text(CONFIG.format(home=self.home,
                                      export=self.export_dir, pseudo=EXPORT))
        with open(self.home / "ganesha.out", "ab") as out:
            p = subprocess.Popen(["ip", "netns", "exec", self.netns, GANESHA, "-F", "-f", str(conf),
                                  "-L", str(self.home / "ganesha.log"), "-N", "NIV_EVENT",
                                  "-p", str(self.home / "ganesha.pidfile")],
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                 start_new_session=True)
        (self.home / "ganesha.pid").write_text(f"{p.pid}\n")   # `ip netns exec` execs
        deadline = time.monotonic() + timeout
        while not self.serves():
            if p.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise LabError(f"nfs-ganesha in {self.netns} did not serve {self.url}"
                               f"{self._why()}; see {self.home / 'ganesha.log'}")
            time.sleep(0.1)
        return self.url

    def _why(self) -> str:
        """The server's last complaint in its log, if it left one."""
        try:
            lines = (self.home / "ganesha.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        starts = [i for i, ln in enumerate(lines) if "Starting: Ganesha" in ln]
        bad = [ln for ln in lines[starts[-1] if starts else 0:]
               if ":CRIT :" in ln or ":FATAL :" in ln]
        return f" ({bad[0].rsplit(' :', 1)[-1].strip()})" if bad else ""   # the first: the cause

    def serves(self) -> bool:
        """A client in the server's namespace can mount the export now."""
        return subprocess.run(["ip", "netns", "exec", self.netns, sys.executable, "-c", PROBE,
                               self.address, EXPORT], capture_output=True,
                              timeout=20).returncode == 0

    def signal(self, sig: signal.Signals) -> None:
        n = self.pid()
        if n is None:
            raise LabError(f"nfs-ganesha in {self.netns} is not running")
        os.kill(n, sig)

    def stop(self) -> None:
        """Stop the server (idempotent); a frozen one is thawed first so that it can exit."""
        n = self.pid()
        if n is not None:
            os.kill(n, signal.SIGCONT)
            os.kill(n, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while self.pid() is not None:
                if time.monotonic() > deadline:
                    os.kill(n, signal.SIGKILL)
                    break
                time.sleep(0.05)
        (self.home / "ganesha.pid").unlink(missing_ok=True)

    def wipe(self) -> None:
        """Stop it and remove its folder, exported data included."""
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)
