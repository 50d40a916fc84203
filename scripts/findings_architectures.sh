#!/usr/bin/env bash
# docs/findings.md "Architectures on MNIST": the lab CNN and torchvision resnet18 (CIFAR stem) with max,
# blur and APS down-sampling, 3 seeds each, measured under crop shifts (the default), then each trained
# network again under circular shifts (shift.mode=roll, eval.py), then the summaries.
#   bash scripts/findings_architectures.sh OUT [overrides for every training job]
# The measurement settings below (a seeded subset of MAX_IMAGES=150 test images, the shifts along the axes
# up to 4 pixels (PATTERN=axis: 17 shifts instead of the grid's 81), the trained network only) and
# trainer.limit_train_batches=100 keep the 24 runs within about 90 minutes on a 2-core CPU; overrides
# after OUT go to every training job.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: bash scripts/findings_architectures.sh OUT [overrides]}"
shift
if [ -z "${MNIST_ROOT:-}" ] && [ -d ../shared/data ]; then
    MNIST_ROOT="$(realpath ../shared/data)"
    export MNIST_ROOT
fi
PYTHON="${PYTHON:-python}"
measure=(callbacks.shift_probe.max_images="${MAX_IMAGES:-150}" shift.pattern="${PATTERN:-axis}" callbacks.shift_probe.untrained=false
         callbacks.shift_probe.figures=false callbacks.shift_probe.progress=false)
"$PYTHON" train.py -m experiment=lab,resnet18,resnet18_blur,resnet18_aps seed=0,1,2 "${measure[@]}" \
    trainer.limit_train_batches="${TRAIN_BATCHES:-100}" "hydra.sweep.dir=$out/crop" 'hydra.sweep.subdir=${task_name}_${seed}' "$@"
"$PYTHON" scripts/summarize.py "$out/crop" --baseline experiment=lab
for experiment in lab resnet18 resnet18_blur resnet18_aps; do
    "$PYTHON" eval.py -m seed=0,1,2 "ckpt_path=$out/crop/${experiment}_\${seed}/checkpoints/last.ckpt" \
        shift.mode=roll "${measure[@]}" "hydra.sweep.dir=$out/roll/$experiment"
    "$PYTHON" scripts/summarize.py "$out/roll/$experiment"
done
