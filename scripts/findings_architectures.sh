#!/usr/bin/env bash
# docs/findings.md "Architectures on MNIST": the lab CNN and torchvision resnet18 (CIFAR stem) with max,
# blur and APS down-sampling, 3 seeds each, measured under crop shifts (the default), then each trained
# network again under circular shifts (shift.mode=roll, eval.py), then the summaries.
#   bash scripts/findings_architectures.sh OUT [overrides for every training job]
# CPU-sized settings (environment variables): TRAIN_BATCHES=200 training batches of 64 images per epoch
# (the lab: 5 epochs, resnet18: 1; the experiments' own budget), VAL_BATCHES=0.2 and TEST_BATCHES=0.2 of the
# validation and test sets (1,000 and 2,000 images), the measurement on MAX_IMAGES=200 seeded test images,
# shifts along the axes up to 4 pixels (PATTERN=axis: 17 shifts instead of the grid's 81), the trained
# network only. The 24 runs take about 90 minutes on a 2-core CPU. Overrides after OUT go to every training job.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: bash scripts/findings_architectures.sh OUT [overrides]}"
shift
if [ -z "${MNIST_ROOT:-}" ] && [ -d ../shared/data ]; then
    MNIST_ROOT="$(realpath ../shared/data)"
    export MNIST_ROOT
fi
PYTHON="${PYTHON:-python}"
measure=(trainer.limit_test_batches="${TEST_BATCHES:-0.2}" callbacks.shift_probe.max_images="${MAX_IMAGES:-200}" shift.pattern="${PATTERN:-axis}" callbacks.shift_probe.untrained=false
         callbacks.shift_probe.figures=false callbacks.shift_probe.progress=false)
"$PYTHON" train.py -m experiment=lab,resnet18,resnet18_blur,resnet18_aps seed=0,1,2 "${measure[@]}" \
    trainer.limit_train_batches="${TRAIN_BATCHES:-200}" trainer.limit_val_batches="${VAL_BATCHES:-0.2}" "hydra.sweep.dir=$out/crop" 'hydra.sweep.subdir=${task_name}_${seed}' "$@"
"$PYTHON" scripts/summarize.py "$out/crop" --baseline experiment=lab
"$PYTHON" scripts/summarize.py "$out/crop" --baseline experiment=resnet18 --out "$out/crop_vs_resnet18"
for experiment in lab resnet18 resnet18_blur resnet18_aps; do
    "$PYTHON" eval.py -m seed=0,1,2 "ckpt_path=$out/crop/${experiment}_\${seed}/checkpoints/last.ckpt" \
        shift.mode=roll "${measure[@]}" "hydra.sweep.dir=$out/roll/$experiment"
    "$PYTHON" scripts/summarize.py "$out/roll/$experiment"
done
# every roll job in one folder: one table of the circular-shift control, paired with the lab by seed
mkdir -p "$out/roll_jobs"
for experiment in lab resnet18 resnet18_blur resnet18_aps; do
    for job in 0 1 2; do cp -r "$out/roll/$experiment/$job" "$out/roll_jobs/${experiment}_$job"; done
done
"$PYTHON" scripts/summarize.py "$out/roll_jobs" --out "$out/roll_all" --baseline "ckpt_path=$out/crop/lab_\$\{seed\}/checkpoints/last.ckpt"
