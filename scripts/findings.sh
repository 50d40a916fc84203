#!/usr/bin/env bash
# Reproduce the README's "Findings": 3 experiments x 3 seeds at the default 5 epochs, then the summary.
#   bash scripts/findings.sh            (MNIST from $MNIST_ROOT, else ../shared/data, else download)
# Writes outputs/multirun/<date>/<time>/{0..8}/ and copies summary.md / summary_radial.png to docs/findings/.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${MNIST_ROOT:-}" ] && [ -d ../shared/data ]; then
    MNIST_ROOT="$(realpath ../shared/data)"
    export MNIST_ROOT
fi
stamp="$(date +%Y-%m-%d/%H-%M-%S)"
sweep="outputs/multirun/$stamp"
start=$(date +%s)
python train.py -m experiment=lab,augmented,blurpool seed=0,1,2 "hydra.sweep.dir=$sweep" \
    callbacks.shift_probe.progress=false "$@"
echo "sweep wall time: $(( $(date +%s) - start )) s" | tee "$sweep/wall_time.txt"
python scripts/summarize.py "$sweep"
mkdir -p docs/findings
cp "$sweep/summary.md" "$sweep/summary_radial.png" docs/findings/
cp "$sweep/wall_time.txt" docs/findings/
