"""`specc --help`, and `specc build` of a spec with a typo, against `python -c "import torch"`
(goals: --help <= 0.5x; a typo is reported without importing torch, in <= 1 s).
    python bench/cli_startup.py
"""
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, report  # noqa: E402

TYPO = "specc: 1\nname: typo\ninputs: {x: [batch, 4]}\nlayers:\n  - {op: Lienar, out_features: 2}\n"


def main() -> float:
    def run(*args, code=0):
        def call():
            r = subprocess.run([sys.executable, *args], capture_output=True)
            assert r.returncode == code, r.stderr
        return call

    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "typo.yaml"
        spec.write_text(TYPO)
        medians = interleaved({"import torch": run("-c", "import torch"), "specc --help": run("-m", "specc", "--help"),
                               "specc build typo.yaml": run("-m", "specc", "build", str(spec), code=2)},
                              rounds=10, warmup=1)
    ratio = report("CLI start-up", "import torch", {k: medians[k] for k in ("import torch", "specc --help")}, limit=0.5)
    report("a typo in a spec", "import torch", {k: medians[k] for k in ("import torch", "specc build typo.yaml")})
    typo = medians["specc build typo.yaml"]
    print(f"  a typo is reported in {typo:.2f} s ({'OK' if typo <= 1.0 else 'OVER'} the 1 s goal)")
    return ratio


if __name__ == "__main__":
    main()
