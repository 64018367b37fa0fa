import os
import shutil

import pytest

E2E_TOOLS = ("qemu-system-x86_64", "libvirtd", "ip", "sshd", "ssh-keygen", "unshare", "tini")


def missing_prerequisites() -> list[str]:
    missing = [] if os.geteuid() == 0 else ["root"]
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
