#!/usr/bin/env bash
# Everything kbench does on a GPU, in one go, for a GPU machine lent for a few minutes:
#   1. the smoke grid end to end through the local backend (torchrun, bf16, channels_last for
#      ResNet), compile off, choosing on a validation hold-out (select_on: val);
#   2. bench/train_step.py: fp32 eager vs kbench vs kbench+compile, and the real input path;
#   3. the smoke grid again with compile on; the report of both runs;
#   4. the linear probe and LP-FT beside fine-tuning, and a sweep with halving (issues 26, 27);
#   5. a DDP step over NCCL with compile (bench/ddp_check.py).
# The most wanted come first: a run cut short by its time limit still says the most.
# Usage: bash bench/gpu_check.sh OUTDIR   (kbench and open_clip importable by python3)
set -uo pipefail
out=${1:?usage: gpu_check.sh OUTDIR}
mkdir -p "$out"
work=$(mktemp -d)
store=$work/store
kbench() { python3 -m kbench.cli.main "$@"; }
step() { echo; echo "==== $* ($(date +%T))"; }

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, torchvision, open_clip; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'torchvision', torchvision.__version__, 'open_clip', open_clip.__version__, 'gpus', torch.cuda.device_count())"

step "smoke grid, compile off"
kbench submit --grid smoke --backend local --store "$store" --run-id gpu-eager

step "bench/train_step.py --compile --end-to-end"
python3 bench/train_step.py --compile --end-to-end --out "$out/train_step.json"

step "smoke grid, compile on (2 epochs)"
sed -e 's/^name: smoke/name: smoke-compile/' -e 's/^defaults:/defaults:\n  compile: true\n  epochs: 2/' \
  "$(python3 -c 'import kbench, pathlib; print(pathlib.Path(kbench.__file__).parent / "grids/smoke.yaml")')" > "$work/smoke-compile.yaml"
kbench submit --grid "$work/smoke-compile.yaml" --backend local --store "$store" --run-id gpu-compile

for run in gpu-eager gpu-compile; do
  step "records of $run"
  kbench status --store "$store" --run "$run"
  python3 - "$store" "$run" <<'PY'
import json, pathlib, sys
for path in sorted(pathlib.Path(sys.argv[1], "runs", sys.argv[2]).glob("*/result.json")):
    r = json.loads(path.read_text())
    keep = {k: r.get(k) for k in ("pair", "gpus", "environment", "best", "best_epoch", "final", "train_seconds", "selection")}
    print(path.parent.name, json.dumps(keep)[:700])
    # What evaluating the test and validation splits cost each epoch (the validation pass is
    # the hold-out of the synthetic training split)
    epochs = json.loads((path.parent / "metrics.json").read_text())["epochs"]
    print("  eval_seconds", [round(e.get("eval_seconds", 0), 2) for e in epochs],
          "val samples", epochs[-1].get("val", {}).get("samples"))
PY
  kbench collect --store "$store" --run "$run" --out-dir "$work/report-$run" > /dev/null && echo "report: report-$run"
done

step "methods on the GPU: linear probe (features on the GPU, probe on the CPU) and LP-FT"
cat > "$work/methods.yaml" <<'YAML'
datasets: [synthetic]
models: [clip-tiny, resnet-tiny]
methods: [fine-tune, linear-probe, lp-ft]
defaults: {epochs: 2, tensorboard: true}
YAML
kbench submit --grid "$work/methods.yaml" --backend local --store "$store" --run-id gpu-methods
kbench collect --store "$store" --run gpu-methods --out-dir "$work/report-gpu-methods" | head -3

step "a sweep on the GPU: trials to their rungs, resumed from checkpoints, seeds of the winner"
cat > "$work/sweep.yaml" <<'YAML'
datasets: [synthetic]
models:
  clip-tiny: {sweep: {lr: [1.0e-3, 4.0e-3, 2.0e-2]}}
defaults: {epochs: 4}
halving: {eta: 2, rungs: [1, 3]}
seeds: 2
YAML
kbench submit --grid "$work/sweep.yaml" --backend local --store "$store" --run-id gpu-sweep
kbench status --store "$store" --run gpu-sweep
python3 bench/probe.py --quick --json > "$out/probe.json" && echo "probe: probe.json"

step "DDP over NCCL, compiled"
python3 -m torch.distributed.run --nproc-per-node "$(nvidia-smi -L | wc -l)" bench/ddp_check.py 2>&1 | grep -E "^rank|Error|error" | head -20
tar -C "$work" -czf "$out/gpu-runs.tgz" --exclude "*.pt" .
