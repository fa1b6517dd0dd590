"""`specc --help` wall time against `python -c "import torch"` (goal: ratio <= 0.5).
    python bench/cli_startup.py
"""
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, report  # noqa: E402


def main() -> float:
    def run(*args):
        return lambda: subprocess.run([sys.executable, *args], check=True, capture_output=True)

    medians = interleaved({"import torch": run("-c", "import torch"), "specc --help": run("-m", "specc", "--help")},
                          rounds=10, warmup=1)
    return report("CLI start-up", "import torch", medians, limit=0.5)


if __name__ == "__main__":
    main()
