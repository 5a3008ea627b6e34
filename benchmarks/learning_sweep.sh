#!/usr/bin/env bash
# Learning check of the tiny default models (issue: "learning works"): trains several single-view
# variants and the multi-view model side by side, evaluates each with `smil evaluate` (model vs the
# mean-pose baseline, test split) and prints one JSON line per run plus a summary JSON.
#
#   bash benchmarks/learning_sweep.sh [RUNS...]        # default: every run below
#
# Meant for a machine with a GPU and many cores: the runs named (default: all) start at once, one CPU
# thread each (ten at a time took about 4 minutes on one H100 with 16 cores); on a laptop give one run
# name at a time. Data are made first
# with the default body model: 720 single-view samples (random cameras, seed 1) and 120 samples × 4
# views (fixed rig, seed 2), rendered at 160² and stored at 64² and 128². Output: $OUT (or
# results/learning_sweep) holds sweep.json; runs/ under it keeps every model and evaluation.
set -u
cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    for cand in .venv/bin/python python3 python; do
        if command -v "$cand" >/dev/null 2>&1 || [ -x "$cand" ]; then PY=$cand; break; fi
    done
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
OUTD=${OUT:-results/learning_sweep}
W=${SWEEP_WORK:-$OUTD/work}
mkdir -p "$OUTD" "$W/runs" "$W/data"
smil() { "$PY" -m smil "$@"; }

D=$W/data
if [ ! -f "$D/single720_64.h5" ]; then
    smil body build-default "$D/default.pkl" >/dev/null || exit 1
    smil synth --out "$D/single_src" --body-model "$D/default.pkl" --num-samples 720 --views 1 \
        --image-size 160 --seed 1 >/dev/null 2>&1 || exit 1
    smil synth --out "$D/multi_src" --body-model "$D/default.pkl" --num-samples 120 --views 4 \
        --image-size 160 --seed 2 >/dev/null 2>&1 || exit 1
    smil preprocess "$D/single_src/manifest.jsonl" "$D/single720_128.h5" --image-size 128 --quiet || exit 1
    smil preprocess "$D/multi_src/manifest.jsonl" "$D/multi120_128.h5" --image-size 128 --quiet || exit 1
    smil preprocess "$D/single_src/manifest.jsonl" "$D/single720_64.h5" --image-size 64 --quiet || exit 1
fi

S=config/experiments/tiny_singleview.json
M=config/experiments/tiny_multiview.json
# The configs' values before this sweep chose the current defaults (96 px, 2D weight 1, params 0.2),
# set explicitly so that every run keeps its meaning when the configs change.
B0="--set loss.weights.keypoints2d=1 --set loss.weights.params=0.2 --set optim.lr=0.001"
B="$B0 --set data.image_size=64"
declare -A RUNS=(
    # first round (24 or 48 epochs; 36 steps per epoch)
    [single_e24]="$S single720_64.h5 $B --set optim.epochs=24"
    [single_e48]="$S single720_64.h5 $B --set optim.epochs=48"
    [single_s96]="$S single720_128.h5 $B0 --set data.image_size=96 --set optim.epochs=24"
    [single_noaug]="$S single720_64.h5 $B --set optim.epochs=24 --set data.augment=false"
    [single_kp5_e24]="$S single720_64.h5 $B --set optim.epochs=24 --set loss.weights.keypoints2d=5"
    [single_lr3]="$S single720_64.h5 $B --set optim.epochs=24 --set optim.lr=0.003"
    [single_ief3]="$S single720_64.h5 $B --set optim.epochs=24 --set model.ief_iterations=3 --set model.hidden_dim=256"
    [single_params005]="$S single720_64.h5 $B --set optim.epochs=24 --set loss.weights.params=0.05"
    [multi_s96_e6]="$M multi120_128.h5 --set data.image_size=96 --set optim.epochs=6 --set optim.lr=0.0005"
    [multi_e24]="$M multi120_128.h5 $B --set optim.epochs=24"
    # second round (36 epochs)
    [single_e36]="$S single720_64.h5 $B --set optim.epochs=36"
    [single_kp5_params005]="$S single720_64.h5 $B --set optim.epochs=36 --set loss.weights.keypoints2d=5 --set loss.weights.params=0.05"
    [single_kp5_noclip]="$S single720_64.h5 $B --set optim.epochs=36 --set loss.weights.keypoints2d=5 --set optim.grad_clip=0"
    [single_kp5_noief]="$S single720_64.h5 $B --set optim.epochs=36 --set loss.weights.keypoints2d=5 --set loss.ief_intermediate_weight=0"
    [single_kp5_mlp]="$S single720_64.h5 $B --set optim.epochs=36 --set loss.weights.keypoints2d=5 --set model.head=mlp"
    [single_kp5_b32]="$S single720_64.h5 $B --set optim.epochs=36 --set loss.weights.keypoints2d=5 --set data.batch_size=32 --set optim.lr=0.002"
    [single_kp5_no3d]="$S single720_64.h5 $B --set optim.epochs=36 --set loss.weights.keypoints2d=5 --set loss.weights.keypoints3d=0"
    [single_kp10]="$S single720_64.h5 $B --set optim.epochs=36 --set loss.weights.keypoints2d=10"
    [single_kp5_params005_kp3d01]="$S single720_64.h5 $B --set optim.epochs=36 --set loss.weights.keypoints2d=5 --set loss.weights.params=0.05 --set loss.weights.keypoints3d=0.1"
    [single_kp5_rot30]="$S single720_64.h5 $B --set optim.epochs=36 --set loss.weights.keypoints2d=5 --set data.aug_rotation_deg=30"
    # a longer run of the best settings (2160 steps; about 19 minutes on 2 idle CPU cores)
    [single_kp10_params005_mlp_e60]="$S single720_64.h5 $B --set optim.epochs=60 --set loss.weights.keypoints2d=10 --set loss.weights.params=0.05 --set model.head=mlp"
    # the configs as they are (the default pipeline's settings, on these data)
    [single_default]="$S single720_64.h5"
    [multi_default]="$M multi120_128.h5"
)
names=("$@")
[ ${#names[@]} -eq 0 ] && names=("${!RUNS[@]}")
for n in "${names[@]}"; do
    spec=${RUNS[$n]:-}
    if [ -z "$spec" ]; then echo "learning_sweep: unknown run '$n' (known: ${!RUNS[*]})" >&2; exit 2; fi
    read -r cfg data rest <<<"$spec"
    (
        # shellcheck disable=SC2086  # $rest is a list of --set options
        smil train --config "$cfg" --out "$W/runs/$n" --set data.dataset="$D/$data" \
            --set body_model="$D/default.pkl" --set data.num_workers=0 $rest >"$W/runs/$n.train.log" 2>&1 &&
            smil evaluate "$W/runs/$n/model.pt" "$D/$data" --out "$W/runs/$n/eval" \
                --body-model "$D/default.pkl" --quiet >"$W/runs/$n.eval.log" 2>&1
        echo "learning_sweep: $n finished (exit $?)" >&2
    ) &
done
wait

"$PY" - "$W/runs" "$OUTD/sweep.json" "${names[@]}" <<'PY'
import csv, json, sys
from pathlib import Path

runs, out, names = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
keys = ("keypoints2d_mean_px", "keypoints2d_median_px", "pck_5px", "pck_10px", "mpjpe", "mpjpe_mm",
        "pa_mpjpe", "pa_mpjpe_mm")
result = {}
for n in sorted(names):
    r = {}
    try:
        rows = list(csv.DictReader(open(runs / n / "history.csv")))
        r["val_px_by_epoch"] = [round(float(x.get("val/keypoints2d_px") or "nan"), 2) for x in rows]
        r["train_seconds"] = round(sum(float(x["seconds"]) for x in rows), 1)
        m = json.load(open(runs / n / "eval" / "metrics.json"))
        for p in ("model", "baseline"):
            r[p] = {k: round(m[p]["headline"][k], 3) for k in keys if m[p]["headline"].get(k) is not None}
        r["model_over_baseline_2d"] = round(r["model"]["keypoints2d_mean_px"] / r["baseline"]["keypoints2d_mean_px"], 3)
    except (OSError, KeyError, ValueError) as exc:
        r["error"] = f"{type(exc).__name__}: {exc} (see {runs / n}.train.log / .eval.log)"
    result[n] = r
    print(n, json.dumps(r))
out.write_text(json.dumps(result, indent=1))
PY
