"""CapsNet throughput: plain eager reference vs CapsLab, in one run. Same as `capslab bench`.

    .venv/bin/python benchmarks/bench_throughput.py [--steps 3] [--compile]
"""

import sys

from capslab.cli.main import app

if __name__ == "__main__":
    app(["bench", *sys.argv[1:]])
