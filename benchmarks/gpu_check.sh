#!/usr/bin/env bash
# Every GPU check of the GPU issue in one device call (about 9 minutes on an H200): the tests marked
# `gpu` (a short run of the demo's training script on the device beside them: --device, s/step),
# then `glmv bench` at GLM-4.1V-9B's exact shapes (random bfloat16 weights drawn on the GPU, a
# 1120x1120 image, 128 new tokens): ours by default (CUDA graphs) side by side with transformers in
# one process, int8 with a ~4k-token prompt, --compile in a first and a second process (inductor's
# disk cache), int4 as int8; the table; then where a decode step's time goes
# (benchmarks/decode_profile.py, bf16, int8 and int4); a chat's second turn with and without the prompt cache (follow_up_bench.py);
# decode steps of 1-8 rows (glmv serve --parallel) against the one-row graph (batch_decode_bench.py); the
# graphs that check drafts against the one-token graph (lookup_bench.py); last, the
# vision tower's peak memory over 30 pages, at once and in groups (vision_memory.py). Every step has
# a time limit and the whole stays inside BUDGET seconds.
#
#   here, once:  bash benchmarks/gpu_wheels.sh
#   then:        device run: command "bash benchmarks/gpu_check.sh", carry [".whl"], timeout_s 590
#   a dry run of the whole script on a CPU, in a few minutes:
#                SHAPE=tiny IMAGE=112 NEW=8 DEVICE=cpu bash benchmarks/gpu_check.sh
#
# What comes back (a device call returns at most 8 files from $OUT): console.log (if the caller
# tees into it), table.txt, profile_bfloat16.txt, profile_int8.txt, profile_int4.txt and logs.tgz (every
# log and JSON).
# EAGER=1 adds the bench without CUDA graphs (27.6 tok/s against 115.6 with them, stop 23).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/glmv-gpu-out} SHAPE=${SHAPE:-9b} IMAGE=${IMAGE:-1120} NEW=${NEW:-128} DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-550} W=/tmp/glmv-gpu
mkdir -p "$OUT" "$W"
export PYTHONUNBUFFERED=1 GLMV_BENCH_CACHE=/tmp/glmv-bench PYTHONPATH=$PWD
[ "$DEVICE" = cpu ] && export GLMV_GPU_TEST_DEVICE=cpu
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD
fi
FONT=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf  # the demo's number images (Debian's fonts-dejavu-core)
if [ ! -f "$FONT" ] && [ -f .whl/DejaVuSans.ttf ]; then mkdir -p "$(dirname "$FONT")" && cp .whl/DejaVuSans.ttf "$FONT"; fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv,noheader
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__,
'transformers', transformers.__version__)"

step() {  # step NAME SECONDS COMMAND...: run with a time limit (cut to what the budget has left)
  local name=$1 limit=$2; shift 2
  local left=$((BUDGET - SECONDS)) t0=$SECONDS
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 15 ]; then echo "$name: skipped, the budget is spent"; return; fi
  timeout "$limit" "$@" > "$W/$name.out" 2> "$W/$name.err"
  echo "$name: exit $? in $((SECONDS - t0)) s"
}

# the demo's training script on the device (issue 20: more steps is the lever that has worked), beside
# the tests: to see that --device works there and how many seconds a step takes
timeout 150 python3 -m glmv_cli.demo.train "$W/demo-train" --device "$DEVICE" --examples "${DEMO_EXAMPLES:-600}" \
  --easy 150 --easy-first 20 --easy-steps 40 --epochs 1 --workers 6 --threads 4 --log-every 20 --monitor 12 \
  --monitor-every 100 --save-every 100000 > "$W/demo_train.log" 2>&1 &
demo=$!

t0=$SECONDS  # the two gpu test files only: collecting the rest would import packages the GPU image may lack
timeout 240 python3 -m pytest -q -m gpu tests/model/test_cuda.py tests/cli/test_cuda_commands.py -p no:cacheprovider \
  -rfE --tb=short > "$W/gpu_tests.log" 2>&1
echo "gpu tests: exit $? in $((SECONDS - t0)) s"; grep -E "^(FAILED|ERROR)|passed|failed" "$W/gpu_tests.log" | tail -n 12
wait "$demo"; echo "demo train on $DEVICE: exit $?"; grep -E "^step|data ready|wrote|Error" "$W/demo_train.log" | tail -n 4
rm -f "$W/demo-train/model.safetensors"

t0=$SECONDS  # the random checkpoint, drawn on the device, where bench looks for it
python3 -m glmv_cli.random_checkpoint "$GLMV_BENCH_CACHE/$SHAPE-bfloat16-$DEVICE" --shape "$SHAPE" --dtype bfloat16 \
  --device "$DEVICE" > /dev/null && du -sh "$GLMV_BENCH_CACHE/$SHAPE-bfloat16-$DEVICE"
echo "random $SHAPE checkpoint: $((SECONDS - t0)) s"

B=(python3 -m glmv_cli bench --shape "$SHAPE" --dtype bfloat16 --device "$DEVICE" --image "$IMAGE" --new-tokens "$NEW")
step bench_default 120 "${B[@]}"
step bench_int8 90 "${B[@]}" --quantize int8 --skip-reference --prompt-words 2400
step bench_compile_1st 120 "${B[@]}" --compile --skip-reference
step bench_compile_2nd 80 "${B[@]}" --compile --skip-reference
step bench_int4 75 "${B[@]}" --quantize int4 --skip-reference --prompt-words 2400
runs=(bench_default bench_int8 bench_compile_1st bench_compile_2nd bench_int4)
if [ "${EAGER:-0}" = 1 ]; then step bench_eager 60 "${B[@]}" --eager --skip-reference; runs+=(bench_eager); fi
reports=()
for r in "${runs[@]}"; do mv -f "$W/$r.out" "$W/$r.json" 2>/dev/null; reports+=("$W/$r.json"); done
python3 benchmarks/gpu_table.py "${reports[@]}" | tee "$OUT/table.txt"

CKPT=$GLMV_BENCH_CACHE/$SHAPE-bfloat16-$DEVICE
step profile_bfloat16 60 python3 benchmarks/decode_profile.py "$CKPT" --device "$DEVICE" --dtype bfloat16 \
  --json "$W/profile_bfloat16.json"
step profile_int8 70 python3 benchmarks/decode_profile.py "$CKPT" --device "$DEVICE" --dtype bfloat16 --quantize int8 \
  --json "$W/profile_int8.json"
step profile_int4 50 python3 benchmarks/decode_profile.py "$CKPT" --device "$DEVICE" --dtype bfloat16 --quantize int4 \
  --json "$W/profile_int4.json"
for p in profile_bfloat16 profile_int8 profile_int4; do cp "$W/$p.out" "$OUT/$p.txt" 2>/dev/null && head -n 3 "$OUT/$p.txt"; done
# a chat's second turn through the prompt cache, and without it (the same checkpoint, bfloat16)
step follow_up 60 python3 benchmarks/follow_up_bench.py --model "$CKPT" --device "$DEVICE" --image "$IMAGE" --reps 2
tail -n 1 "$W/follow_up.err"; tail -n 1 "$W/follow_up.out"
# glmv serve --parallel's step: N rows eager against the one-row CUDA graph (decides CUDA's default)
step batch_decode 50 python3 benchmarks/batch_decode_bench.py "$CKPT" --device "$DEVICE" --dtype bfloat16 \
  --rows 1 2 4 8 --prompt 2048 --steps 24
tail -n 6 "$W/batch_decode.err"
# drafts (lookup.py): the graphs that check a token and 1-8 drafts against the one-token graph
# (decides whether CUDA drafts by default: it does not until this is measured)
step lookup 40 python3 benchmarks/lookup_bench.py "$CKPT" --device "$DEVICE" --dtype bfloat16 --questions none
head -n 8 "$W/lookup.err"
# the vision tower over 30 pages at once and a group of patches at a time (peak memory, seconds)
step vision_memory 40 python3 benchmarks/vision_memory.py --shape "$SHAPE" --images 30 --size "$IMAGE" \
  --device "$DEVICE" --group 0 8192
cat "$W/vision_memory.out"
tar -C "$W" -czf "$OUT/logs.tgz" --exclude=demo-train/data --exclude='*.safetensors' . && ls "$OUT"
echo "gpu_check: $SECONDS s"
