import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))  # the article's models
ZOO = sorted((ROOT / "specs/zoo").glob("*.yaml"))
# small settings of the zoo specs, so tests that run every spec stay quick
ZOO_SMALL = {
    "resnet": {"layers": [1, 1, 1, 1], "num_classes": 10},
    "mobilenet_v2": {"width_mult": 0.35, "num_classes": 10},
    "vit": {"image_size": 32, "patch_size": 8, "num_layers": 2, "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64,
            "num_classes": 10},
    "gpt": {"vocab_size": 97, "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32},
    "yolov8": {"scale": "n", "nc": 3},
    "gpt2": {"vocab_size": 97, "n_positions": 32, "n_layer": 2, "n_head": 2, "n_embd": 32},
    "llama": {"vocab_size": 97, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 32,
              "tie_word_embeddings": True},
    "qwen2": {"vocab_size": 97, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 32,
              "tie_word_embeddings": True},
    "bert": {"vocab_size": 97, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 64, "max_position_embeddings": 32},
}
SPEC_CASES = [(p, None) for p in SPECS] + [(p, ZOO_SMALL[p.stem]) for p in ZOO]  # (path, params)
sys.path.insert(0, str(ROOT / "tests"))


def case_id(case) -> str:
    path, params = case
    return ("zoo-" if params is not None else "") + path.stem


def run_cli(*args, cwd=None, env=None, timeout=300):
    """Run `python -m specc ARGS` for real, in a new process; returns the CompletedProcess."""
    full_env = dict(os.environ, NO_COLOR="1", COLUMNS="160", **(env or {}))
    full_env.pop("SPECC_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "specc", *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


class Result:
    """What an in-process run of the CLI printed and how it exited."""

    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def invoke(*args, cwd=None, env=None, timeout=None):
    """Run the CLI in this process (typer's CliRunner): the same code as `specc ARGS`, without the
    seconds a new interpreter takes to import torch."""
    from typer.testing import CliRunner

    from specc.cli import app
    old = os.getcwd()
    os.chdir(cwd or old)
    try:
        env = dict(env or {}, NO_COLOR="1", COLUMNS="160", SPECC_DEBUG="")
        r = CliRunner().invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)
    finally:
        os.chdir(old)
    return Result(r.exit_code, r.stdout, r.stderr)


@pytest.fixture
def cli(tmp_path):
    def call(*args, **kw):
        kw.setdefault("cwd", tmp_path)
        return invoke(*args, **kw)
    return call


@pytest.fixture(scope="module")
def one_thread():
    """Small models run fastest on one thread, and other load on a shared machine cannot stall OpenMP."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_configure(config):
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    if workers > 1:  # one share of the cores each, not every worker spinning threads on all of them
        import torch
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    config.addinivalue_line("markers", "slow: long end-to-end tests (kills, torchrun, full training); part of make test")


@pytest.fixture(scope="module")
def one_thread():
    """Small models run fastest on one thread, and other load on a shared machine cannot stall OpenMP's
    barriers (use with pytestmark = pytest.mark.usefixtures("one_thread"))."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
