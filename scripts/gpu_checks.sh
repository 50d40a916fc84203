#!/usr/bin/env bash
# The project's GPU checks in one run: bash scripts/gpu_checks.sh OUT [PART ...]  (a CUDA GPU, MNIST_ROOT set)
#
#   tests    python -m pytest -m gpu: the tests that need CUDA
#   bench    scripts/bench_gpu.py: CPU/GPU agreement, the lab's epoch and measurement, train.py,
#            resnet50 at 224 px
#   figures  scripts/figure_setups.py on the GPU with the networks in $FIGURE_WEIGHTS, compared with the CPU's
#            results in $FIGURE_BASELINE (rtol 1e-3, atol 1e-5: float32 on another device); OUT/figures.tar.gz
#   runs     train.py trainer=gpu, 1 epoch, every family and the Lie derivative on 1,000 test images, then
#            eval.py on its checkpoint; OUT/train_results.json, OUT/eval_results.json, OUT/last.ckpt
#
# Default: every part. Each part's log is OUT/<part>.log; the end of each is printed.
set -uo pipefail
out=$1
shift
parts=${*:-tests bench figures runs}
mkdir -p "$out"
run=$(mktemp -d)
for part in $parts; do
  echo "== $part"
  case $part in
    tests)
      python -m pytest -q -p no:cacheprovider -m gpu tests/probe/test_engine_truth.py \
        tests/data/test_mnist.py \
        >"$out/tests.log" 2>&1
      tail -2 "$out/tests.log" ;;
    bench)
      python scripts/bench_gpu.py --out "$out/gpu.json" 2>&1 | grep -v "receptive field" >"$out/bench.log"
      tail -12 "$out/bench.log" ;;
    figures)
      python scripts/figure_setups.py run "$run/fig" --weights "$FIGURE_WEIGHTS" --device cuda \
        >"$out/figures.log" 2>&1
      python scripts/figure_setups.py compare "$FIGURE_BASELINE" "$run/fig" --rtol 1e-3 --atol 1e-5 \
        | tee -a "$out/figures.log" | grep -v "^   "
      tar czf "$out/figures.tar.gz" -C "$run" fig ;;
    runs)
      families='transform=[translation,rot90,flip,rotation,subpixel]'
      python train.py trainer=gpu trainer.max_epochs=1 "$families" callbacks.shift_probe.max_images=1000 \
        callbacks.shift_probe.lie_derivative=true paths.output_dir="$run/train" >"$out/runs.log" 2>&1
      echo "train.py exit $?" | tee -a "$out/runs.log"
      python eval.py trainer=gpu ckpt_path="$run/train/checkpoints/last.ckpt" "$families" \
        callbacks.shift_probe.max_images=1000 paths.output_dir="$run/eval" >>"$out/runs.log" 2>&1
      echo "eval.py exit $?" | tee -a "$out/runs.log"
      cp "$run/train/results.json" "$out/train_results.json"
      cp "$run/eval/results.json" "$out/eval_results.json"
      cp "$run/train/checkpoints/last.ckpt" "$out/last.ckpt" ;;
    *) echo "unknown part $part (tests, bench, figures, runs)" ;;
  esac
done
