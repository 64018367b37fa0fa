import os
import shutil

import pytest


def pytest_collection_modifyitems(config, items):
    """End-to-end tests need root, QEMU and libvirt; say so instead of failing obscurely."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    for tool in ("qemu-system-x86_64", "libvirtd", "ip"):
        if not shutil.which(tool):
            missing.append(tool)
    if missing:
        skip = pytest.mark.skip(reason=f"end-to-end test needs {', '.join(missing)} (make setup)")
        for item in items:
            if "e2e" in item.keywords:
                item.add_marker(skip)
