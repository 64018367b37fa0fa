"""A missing prerequisite fails (errors) an end-to-end test instead of skipping it."""
import subprocess
import sys
import textwrap


def test_an_e2e_test_without_its_tools_fails_rather_than_skips(tmp_path):
    here = __import__("pathlib").Path(__file__).parent
    for name in ("conftest.py", "channelkit.py"):
        (tmp_path / name).write_text((here / name).read_text())
    (tmp_path / "test_x.py").write_text(textwrap.dedent("""
        import pytest
        @pytest.mark.e2e
        def test_real():
            pass
    """))
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "-o", "markers=e2e: x", str(tmp_path)], capture_output=True, text=True,
                       env={"PATH": str(tmp_path)}, cwd=tmp_path)
    assert p.returncode == 1, p.stdout
    assert "1 error" in p.stdout and "end-to-end test needs qemu-system-x86_64" in p.stdout
