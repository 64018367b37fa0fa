import os
import shutil
from pathlib import Path

import pytest
from channelkit import PipeReader, Proxy, free_port

from ftorch.channel import trust
from ftorch.channel.feeder import Feeder
from ftorch.channel.logtail import LogTail
from ftorch.channel.receiver import Receiver
from ftorch.channel.sender import Sender
from ftorch.rr.replaylog import HEADER_SIZE

E2E_TOOLS = ("qemu-system-x86_64", "libvirtd", "ip", "sshd", "ssh-keygen", "unshare", "tini",
             "prometheus", "promtool", "ansible-playbook", "ansible-lint", "systemd-analyze", "nft",
             "ganesha.nfsd")


def missing_prerequisites() -> list[str]:
    missing = [] if os.geteuid() == 0 else ["root"]
    if not os.path.exists(f"/usr/lib/{os.uname().machine}-linux-gnu/libnfs.so.13"):
        missing.append("libnfs13")
    return missing + [t for t in E2E_TOOLS if not shutil.which(t, path=os.environ.get("PATH", "")
                                                              + ":/usr/sbin:/sbin")]


@pytest.fixture(autouse=True)
def _e2e_prerequisites(request):
    """An end-to-end test without root, QEMU, libvirt or sshd fails (never skips): a green run
    must mean the real parts ran."""
    if request.node.get_closest_marker("e2e"):
        missing = missing_prerequisites()
        if missing:
            pytest.fail(f"end-to-end test needs {', '.join(missing)} (run `make setup` as root)",
                        pytrace=False)


@pytest.fixture(scope="session")
def credential() -> dict[str, bytes]:
    return trust.new_credential("t")


@pytest.fixture
def pair_dir(tmp_path, credential) -> Path:
    """A pair folder holding the pair's channel credential, as `ftorch up` leaves it."""
    d = tmp_path / "pair"
    d.mkdir()
    trust.write_credential(d, credential)
    return d


@pytest.fixture
def channel(tmp_path, request, pair_dir):
    log_path = tmp_path / "rr.log"
    log_path.write_bytes(bytes(HEADER_SIZE))  # a recording writes its header last
    feeder = Feeder(tmp_path / "replay.fifo", tmp_path / "rx.log", keep=0)   # holes punched
    reader = PipeReader(tmp_path / "replay.fifo")
    if not request.node.get_closest_marker("stalled_backup"):
        reader.start()
    port = free_port()
    receiver = Receiver(("127.0.0.1", port), "t", feeder, timeout_s=2.0,
                        backup_icount=lambda: 0, on_data=lambda f: None,
                        tls=trust.context(pair_dir, server=True), peer_address="127.0.0.1")
    receiver.start()
    proxy = Proxy(port)
    proxy.start()
    tail = LogTail(str(log_path), max_chunk=4096, keep=0)
    tail.start()
    sender = Sender(tail, ("127.0.0.1", proxy.port), "t", heartbeat_s=0.1, timeout_s=2.0,
                    tls=trust.context(pair_dir, server=False))
    sender.proxy = proxy
    sender.start()
    yield log_path, feeder, reader, receiver, sender
    proxy.srv.close()
    sender.stop()
    tail.stop()
    receiver.stop()
    reader.stop = True
    feeder.close()
