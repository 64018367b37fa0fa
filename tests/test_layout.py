"""The package's folders are its architecture: these rules keep them honest."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "ftorch"
# modules that do I/O (sockets, processes, threads, libvirt, SSH), and ftorch's I/O layers
IO = {"socket", "socketserver", "select", "subprocess", "threading", "fcntl", "libvirt",
      "libvirt_qemu", "paramiko", "ftorch.host", "ftorch.rpc", "ftorch.agent", "ftorch.channel",
      "ftorch.gate", "ftorch.ops", "ftorch.worker"}


def imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; ftorch imports are absolute"
            found |= {node.module or ""} | {f"{node.module}.{a.name}" for a in node.names}
    return found


def modules(*folders: str) -> list[Path]:
    return [p for f in folders for p in sorted((PKG / f).rglob("*.py"))]


def under(names: set[str], prefix: str) -> set[str]:
    return {n for n in names if n == prefix or n.startswith(prefix + ".")}


def test_the_agent_never_imports_the_operators_side():
    for p in modules("agent", "channel", "gate", "arbiter", "rr", "host", "rpc"):
        assert not under(imports(p), "ftorch.ops"), f"{p.relative_to(PKG)} imports ftorch.ops"


def test_log_format_arbiter_rules_and_role_table_are_free_of_io():
    pure = [*modules("rr"), PKG / "arbiter/rules.py", PKG / "arbiter/roles.py", PKG / "status.py",
            PKG / "channel/horizon.py", PKG / "channel/framing.py", PKG / "gate/outputgate.py"]
    for p in pure:
        bad = {n for n in imports(p) for io in IO if n == io or n.startswith(io + ".")}
        assert not bad, f"{p.relative_to(PKG)} imports I/O: {sorted(bad)}"


def test_libvirt_and_paramiko_each_have_one_importer():
    for lib, home in (("libvirt", "host/virt.py"), ("paramiko", "rpc/ssh.py"),
                      ("prometheus_client", "agent/metrics.py")):
        users = {str(p.relative_to(PKG)) for p in PKG.rglob("*.py")
                 if under(imports(p), lib) or under(imports(p), lib + "_qemu")}
        assert users == {home}, f"{lib} is imported by {sorted(users)}"


def test_hosts_reach_each_other_only_through_rpc():
    """No module opens another host's agent socket or starts a process in a namespace: the
    shortcuts the lab once allowed (`ip netns exec`, a peer's control socket by path)."""
    for p in PKG.rglob("*.py"):
        text = p.read_text()
        if p.parent.name == "host" and p.name in ("lab.py", "labssh.py", "labprom.py", "labnfs.py"):
            continue   # the lab builds the namespaces
        assert '"netns", "exec"' not in text, f"{p.relative_to(PKG)} runs `ip netns exec`"


def test_libnfs_has_one_caller():
    """The arbiter's NFS client is the only edge that calls into libnfs."""
    users = {str(p.relative_to(PKG)) for p in PKG.rglob("*.py") if "nfs_mount" in p.read_text()}
    assert users == {"arbiter/nfsclient.py"}, users
