"""`pip install .` gives working twistd plugins and the admin command."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_pip_install_registers_the_twistd_plugins_and_the_outpost_command() -> None:
    assert not (ROOT / "twisted" / "plugins" / "__init__.py").exists(), "twisted/plugins must not be a package"
    with tempfile.TemporaryDirectory() as target:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", target, str(ROOT)],
            check=True, capture_output=True, timeout=120,
        )
        # Only the installed copy on the path: run from elsewhere, without the source tree.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONPATH"] = target
        helped = subprocess.run([str(BIN / "twistd"), "--help"], env=env, cwd=target, capture_output=True, text=True, timeout=60)
        assert helped.returncode == 0, helped.stderr
        assert "regiond" in helped.stdout and "clusterd" in helped.stdout
        region_help = subprocess.run([str(BIN / "twistd"), "regiond", "--help"], env=env, cwd=target, capture_output=True, text=True, timeout=60)
        assert "--config" in region_help.stdout
        outpost = subprocess.run([str(Path(target) / "bin" / "outpost"), "--help"], env=env, cwd=target, capture_output=True, text=True, timeout=60)
        assert outpost.returncode == 0 and "token" in outpost.stdout, outpost.stderr
