"""The reliability figures (each is also asserted by tests/reliability):
cases tried and escapes of the spec fuzzer, kills survived and checkpoints lost under SIGKILL,
and whether every resume was bit-exact.
    python bench/reliability.py [--cases 10000] [--kills 50]
"""
import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from tests.reliability import faults, fuzz  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--kills", type=int, default=50)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    os.environ.setdefault("SPECC_MAX_PARAM_BYTES", str(64 * 2**20))
    with tempfile.TemporaryDirectory() as tmp:  # faults fork children: run them before any torch compute here
        t0 = time.perf_counter()
        k = faults.kill_and_resume(Path(tmp), kills=args.kills)
        kill_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    f = fuzz.run(args.cases, seed=2026)
    fuzz_s = time.perf_counter() - t0
    print("== spec front end (mutation fuzzer over specs/ and the golden error cases)")
    print(f"  cases tried        {f.cases:,}  ({f.built:,} built, {f.spec_errors:,} refused with SpecError) in {fuzz_s:.1f} s")
    print(f"  escapes            {len(f.escapes)}")
    print(f"  slowest case       {f.slowest:.3f} s (limit 5 s)")
    print(f"  memory growth      {f.rss_growth_mb:.0f} MB (size guard {int(os.environ['SPECC_MAX_PARAM_BYTES']) >> 20} MB)")
    print("== SIGKILL during training (half of the kills inside checkpoint writes)")
    print(f"  kills survived     {k.kills} of {args.kills} ({k.inside_writes} inside a checkpoint write) in {kill_s:.1f} s")
    print(f"  corrupt checkpoints {k.corrupt}")
    print(f"  checkpoints lost   {k.lost}")
    print(f"  resume bit-exact   {'yes' if k.exact else 'NO'} (final weights against an uninterrupted run)")


if __name__ == "__main__":
    main()
