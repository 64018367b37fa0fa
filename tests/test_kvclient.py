"""The test client's read-back: GETs go a batch at a time, and every answer is matched to its
key in order (a stand-in for the guest's service on a local socket)."""
import importlib.util
import socket
import sys
import threading
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "kvclient", Path(__file__).resolve().parents[1] / "tools/kvclient.py")
kvclient = importlib.util.module_from_spec(spec)
sys.modules["kvclient"] = kvclient   # its dataclasses look their module up there
spec.loader.exec_module(kvclient)


def serve(sock: socket.socket, store: dict[str, str], reads: list[int]) -> None:
    conn, _ = sock.accept()
    with conn:
        buf = b""
        while True:
            chunk = conn.recv(4096)
            if not chunk:
                return
            reads.append(chunk.count(b"\n"))
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                key = line.decode().split()[1]
                conn.sendall(f"VAL {store[key]}\n".encode() if key in store else b"NONE\n")


def test_read_back_batches_and_reports_each_mismatch_by_key():
    store = {f"k{i}": f"v{i}" for i in range(100)}
    store["k7"] = "changed"
    del store["k50"]
    acked = [(f"k{i}", f"v{i}", i + 1) for i in range(100)]
    reads: list[int] = []
    with socket.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        t = threading.Thread(target=serve, args=(ls, store, reads), daemon=True)
        t.start()
        with socket.create_connection(ls.getsockname()) as s:
            bad = kvclient.read_back(kvclient.Conn(s), acked)
    assert bad == ["k7: expected 'v7', got 'VAL changed'", "k50: expected 'v50', got 'NONE'"]
    assert max(reads) > 1   # more than one GET in flight at once
