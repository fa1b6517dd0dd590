import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
sys.path.insert(0, str(ROOT / "tests"))


def run_cli(*args, cwd=None, env=None, timeout=300):
    """Run `python -m specc ARGS` for real; returns the CompletedProcess."""
    full_env = dict(os.environ, NO_COLOR="1", COLUMNS="160", **(env or {}))
    full_env.pop("SPECC_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "specc", *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli(tmp_path):
    def call(*args, **kw):
        kw.setdefault("cwd", tmp_path)
        return run_cli(*args, **kw)
    return call
