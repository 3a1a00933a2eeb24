#!/usr/bin/env bash
# Every GPU check of the GPU issue in one device call (about 7 minutes on an H200): the tests marked
# `gpu`, then `glmv bench` at GLM-4.1V-9B's exact shapes (random bfloat16 weights drawn on the GPU,
# a 1120x1120 image, 128 new tokens): ours by default (CUDA graphs) side by side with transformers
# in one process, ours without graphs, --compile in a first and a second process (inductor's disk
# cache), int8 with a ~4k-token prompt; then a short run of the demo's training script on the device
# (--device, s/step). The table is printed after the benches; logs and JSON go to $OUT.
#
#   here, once:  bash benchmarks/gpu_wheels.sh
#   then:        device run: command "bash benchmarks/gpu_check.sh", carry [".whl"], timeout_s 560
#   a dry run of the whole script on a CPU, in a minute or two:
#                SHAPE=tiny IMAGE=112 NEW=8 DEVICE=cpu bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/glmv-gpu} SHAPE=${SHAPE:-9b} IMAGE=${IMAGE:-1120} NEW=${NEW:-128} DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 GLMV_BENCH_CACHE=/tmp/glmv-bench PYTHONPATH=$PWD
[ "$DEVICE" = cpu ] && export GLMV_GPU_TEST_DEVICE=cpu
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv,noheader
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__,
'transformers', transformers.__version__)"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, keep its output, say how it went
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.json" 2> "$OUT/$name.err"
  echo "$name: exit $? in $((SECONDS - t0)) s"
}

t0=$SECONDS
# the two gpu test files only: collecting the rest would import packages the GPU image may lack
timeout 200 python3 -m pytest -q -m gpu tests/model/test_cuda.py tests/cli/test_cuda_commands.py -p no:cacheprovider \
  > "$OUT/gpu_tests.log" 2>&1
echo "gpu tests: exit $? in $((SECONDS - t0)) s"; tail -n 25 "$OUT/gpu_tests.log"

t0=$SECONDS  # the random checkpoint, drawn on the device, where bench looks for it
python3 -m glmv_cli.random_checkpoint "$GLMV_BENCH_CACHE/$SHAPE-bfloat16-$DEVICE" --shape "$SHAPE" --dtype bfloat16 \
  --device "$DEVICE" > /dev/null && du -sh "$GLMV_BENCH_CACHE/$SHAPE-bfloat16-$DEVICE"
echo "random $SHAPE checkpoint: $((SECONDS - t0)) s"

B=(python3 -m glmv_cli bench --shape "$SHAPE" --dtype bfloat16 --device "$DEVICE" --image "$IMAGE" --new-tokens "$NEW")
step bench_default 150 "${B[@]}"
step bench_int8 100 "${B[@]}" --quantize int8 --skip-reference --prompt-words 2400
step bench_eager 60 "${B[@]}" --eager --skip-reference
step bench_compile_1st 150 "${B[@]}" --compile --skip-reference
step bench_compile_2nd 90 "${B[@]}" --compile --skip-reference
python3 benchmarks/gpu_table.py "$OUT"/bench_default.json "$OUT"/bench_eager.json \
  "$OUT"/bench_compile_1st.json "$OUT"/bench_compile_2nd.json "$OUT"/bench_int8.json | tee "$OUT/table.txt"

# the demo's training script on the device (issue 20: more steps is the lever that has worked):
# a short run, to see that --device works there and how many seconds a step takes
t0=$SECONDS
timeout 120 python3 -m glmv_cli.demo.train "$OUT/demo-train" --device "$DEVICE" --examples "${DEMO_EXAMPLES:-600}" \
  --easy 150 --easy-first 20 --easy-steps 40 --epochs 1 --workers 8 --threads 4 --log-every 20 --monitor 12 \
  --monitor-every 100 --save-every 100000 > "$OUT/demo_train.log" 2>&1
echo "demo train on $DEVICE: exit $? in $((SECONDS - t0)) s"; grep -E "^step|data ready|wrote" "$OUT/demo_train.log" | tail -n 4
rm -f "$OUT/demo-train/model.safetensors"  # 19 MB: not worth carrying back
