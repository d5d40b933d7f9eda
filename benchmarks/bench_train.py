"""Training throughput of the micro presets (prints numbers, never fails).

    python benchmarks/bench_train.py            # same as `plasticlm bench`
"""

from plasticlm.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", "--presets", "25K,85K,200K,390K,670K"]))
