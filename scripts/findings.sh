#!/usr/bin/env bash
# Reproduce the README's "Findings": 3 experiments x 3 seeds at the default 5 epochs, then the summary.
#   bash scripts/findings.sh                 (MNIST from $MNIST_ROOT, else ../shared/data, else download)
#   bash scripts/findings.sh trainer.max_epochs=1    (extra arguments are Hydra overrides for every job)
# Writes outputs/multirun/<date>/<time>/{0..8}/ and copies summary.md / summary_radial.png (and the
# sweep's wall time) to docs/findings/ ($FINDINGS_DIR overrides that folder). Python: $PYTHON, else the
# project's .venv, else python on the PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${MNIST_ROOT:-}" ] && [ -d ../shared/data ]; then
    MNIST_ROOT="$(realpath ../shared/data)"
    export MNIST_ROOT
fi
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
out="${FINDINGS_DIR:-docs/findings}"
stamp="$(date +%Y-%m-%d/%H-%M-%S)"
sweep="outputs/multirun/$stamp"
start=$(date +%s)
"$PYTHON" train.py -m experiment=lab,augmented,blurpool seed=0,1,2 "hydra.sweep.dir=$sweep" \
    callbacks.shift_probe.progress=false "$@"
echo "sweep wall time: $(( $(date +%s) - start )) s" | tee "$sweep/wall_time.txt"
"$PYTHON" scripts/summarize.py "$sweep"
mkdir -p "$out"
cp "$sweep/summary.md" "$sweep/summary_radial.png" "$sweep/wall_time.txt" "$out/"
echo "copied summary.md, summary_radial.png and wall_time.txt to $out/ (sweep: $sweep)"
