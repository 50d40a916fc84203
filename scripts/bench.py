#!/usr/bin/env python
"""Benchmark training, measurement, start-up and memory in one run: python scripts/bench.py [--out bench.json]

MNIST_ROOT=../shared/data python scripts/bench.py              # the full benchmark (a few minutes)
python scripts/bench.py --quick --out /tmp/bench.json          # a smoke test with tiny sizes
The logic and what each figure means: scripts/benchlib.py.
"""

import sys

from benchlib import main

if __name__ == "__main__":
    sys.exit(main())
