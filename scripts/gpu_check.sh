#!/usr/bin/env bash
# The kernels' GPU evidence in one run (DESIGN section 5), for a CUDA machine whose python3 has torch and triton:
#   1. the kernel tests compiled on CUDA (fp32, fp16 and bf16), while side processes warm Triton's and
#      torch.compile's caches for the benchmark shapes (their timings are thrown away);
#   2. notebook 07 at the gpu profile on a quiet GPU: its benchmark cell times every contender, called from Python
#      and replayed from a CUDA graph, and records minigen's figures in docs/results.md; its wall time goes there too;
#   3. a training step of the course's U-Net with and without the fused GroupNorm + SiLU (scripts/unet_step_time.py),
#      then, while the time lasts, torch.profiler traces of one forward+backward at the shapes that lag behind.
# The whole run stays under the device's 600 s a command: later steps are skipped when the clock says so, and the
# results are copied to $OUT after each phase (what is there when a time limit strikes still comes back).
# usage: OUT=some/dir bash scripts/gpu_check.sh            (kernels: tests, notebook 07, bench, traces)
#        OUT=some/dir bash scripts/gpu_check.sh checkpoints (course checkpoints + kernel tests, then the bench)
# results: $OUT/log.txt, tests.txt, trace.txt, the executed notebook and docs/results.{json,md}
set -u
OUT=${OUT:-gpu_check}
if [[ ${1:-} == checkpoints ]]; then
  # Mode "checkpoints" (DESIGN section 12, items 1 and 3 in one device call): the course checkpoints train side by
  # side on the one GPU (small models are launch-bound, so three processes share it well) while the kernel tests
  # run on CUDA beside them; then, if the clock allows, the bench tables on the quiet GPU. The minutes in the
  # manifest are therefore of a shared GPU. usage: OUT=dir bash scripts/gpu_check.sh checkpoints [NAMES...]
  shift
  mkdir -p "$OUT/checkpoints"
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
  log="$OUT/log.txt"
  { date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__)"; } 2>&1 | tee "$log"
  names=("$@"); (( ${#names[@]} )) || names=(vae flow diffusion)
  pids=()
  for name in "${names[@]}"; do
    # each writes data/checkpoints/NAME.pt and its manifest entry: one directory each, merged afterwards, so
    # three processes never write one manifest at once
    ( mkdir -p "/tmp/ck_$name" && MINIGEN_CHECKPOINT_DIR="/tmp/ck_$name" timeout 520 \
        python3 -m minigen.checkpoints build "$name" >"$OUT/checkpoints/$name.log" 2>&1
      echo "checkpoint $name: exit $? after $SECONDS s" | tee -a "$log"
      cp /tmp/ck_$name/* "$OUT/checkpoints/" 2>/dev/null
      mv "$OUT/checkpoints/manifest.json" "$OUT/checkpoints/$name.manifest.json" 2>/dev/null ) &
    pids+=($!)
  done
  MINIGEN_TEST_GPU=1 MINIGEN_AUTOTUNE=0 timeout 200 python3 -m pytest -q -n 4 -rP --durations=15 -p no:cacheprovider \
    --ignore tests/test_slides.py tests -k kernel >"$OUT/tests.txt" 2>&1
  echo "kernel tests on CUDA (GPU shared with the trainings): exit $? in $SECONDS s; $(tail -n 1 "$OUT/tests.txt")" \
    | tee -a "$log"
  wait "${pids[@]}"
  if (( SECONDS < 430 )); then  # the bench on a quiet GPU, recorded in docs/results.md
    timeout $((530 - SECONDS)) python3 -m minigen.bench all --no-compile --record >"$OUT/bench.txt" 2>&1
    echo "bench: exit $? at $SECONDS s" | tee -a "$log"
    cp docs/results.json docs/results.md "$OUT"/
  fi
  echo "gpu_check checkpoints done in $SECONDS s" | tee -a "$log"
  exit 0
fi
mkdir -p "$OUT" /tmp/warm
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
log="$OUT/log.txt"
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__)"; } 2>&1 | tee "$log"

start=$SECONDS
i=0
for shape in 256px 512px "N4096 d64" "N4096 d128" "course DiT" "course video"; do
  i=$((i + 1))
  timeout 150 python3 -m minigen.bench attention --only "$shape" >/tmp/warm/attention$i.txt 2>&1 &
done
timeout 150 python3 -m minigen.bench norm >/tmp/warm/norm.txt 2>&1 &
# notebook 07's own cells before its benchmark (each new shape compiles every autotune candidate once), written to
# a file first: @triton.jit reads its source with inspect, which needs one
python3 - <<'PY'
import json
from IPython.core.inputtransformer2 import TransformerManager  # turns `!cmd` lines into Python
cells = []
for cell in json.load(open("notebooks/07_kernels.ipynb"))["cells"]:
    source = "".join(cell["source"])
    if cell["cell_type"] == "code":
        if "minigen.bench.run" in source:
            break
        cells.append(TransformerManager().transform_cell(source))
open("/tmp/warm/notebook07.py", "w").write("import matplotlib\nmatplotlib.use('Agg')\n" + "\n".join(cells))
PY
timeout 150 python3 /tmp/warm/notebook07.py >/tmp/warm/notebook.txt 2>&1 &
timeout 150 python3 scripts/unet_step_time.py --steps 1 >/tmp/warm/unet.txt 2>&1 &  # the U-Net's fp32 norm keys
# -n 4 (pytest-xdist): four workers compile in parallel (each new shape and dtype is a compile), and a test whose
# kernel breaks the CUDA context ends its worker (tests/conftest.py) and fails alone; -rP keeps the error figures
# each test prints, --durations says which tests the time went to
MINIGEN_TEST_GPU=1 MINIGEN_AUTOTUNE=0 timeout 170 python3 -m pytest -q -n 4 -rP --durations=15 -p no:cacheprovider \
  --ignore tests/test_slides.py tests -k kernel >"$OUT/tests.txt" 2>&1
echo "kernel tests on CUDA: exit $? in $((SECONDS - start)) s; $(tail -n 1 "$OUT/tests.txt")" | tee -a "$log"
wait
echo "caches warm after $((SECONDS - start)) s; warm-up runs that failed:" | tee -a "$log"
grep -l -E "Traceback|FAILED" /tmp/warm/*.txt | while read -r f; do echo "== $f"; tail -n 5 "$f"; done | tee -a "$log"

start=$SECONDS
if timeout 260 python3 scripts/course_table.py time --profile gpu --inplace 07 >>"$log" 2>&1; then
  echo "notebook 07 at the gpu profile: ok in $((SECONDS - start)) s" | tee -a "$log"
else
  pkill -f ipykernel_launcher  # a kernel left running by a timed-out notebook would share the GPU with the bench
  echo "notebook 07 failed after $((SECONDS - start)) s; the benchmark alone (no compile, no graph rows):" \
    | tee -a "$log"
  timeout 100 python3 -m minigen.bench all --no-compile --record >>"$log" 2>&1
fi
cp notebooks/07_kernels.ipynb docs/results.json docs/results.md "$OUT"/  # again at the end; this survives a time-out
# notebook 09's temporal attention (ours vs permute -> SDPA -> permute, and the full vs factorized block), recorded
if (( SECONDS < 470 )); then
  timeout 60 python3 -m minigen.bench temporal --record >"$OUT/bench_temporal.txt" 2>&1
  echo "bench temporal: exit $?" | tee -a "$log"
  cp docs/results.json docs/results.md "$OUT"/
fi
# the fused GroupNorm + SiLU inside the course's U-Net: a training step with and without it
if (( SECONDS < 500 )); then
  timeout 60 python3 scripts/unet_step_time.py >/tmp/unet.txt 2>&1
  echo "unet_step_time: exit $?" | tee -a "$log"
  tail -n 3 /tmp/unet.txt | tee -a "$log"
fi
# where a forward+backward's time goes (kernels, launch gaps, host work), for the shapes that lag behind PyTorch
for shape in course 256px; do
  if (( SECONDS < 530 )); then
    timeout 40 python3 -m minigen.bench all --trace --only "$shape" >>"$OUT/trace.txt" 2>&1
  else
    echo "trace $shape skipped: $SECONDS s used" | tee -a "$log"
  fi
done
echo "gpu_check done in $SECONDS s" | tee -a "$log"
cp notebooks/07_kernels.ipynb docs/results.json docs/results.md "$OUT"/
