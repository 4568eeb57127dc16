#!/bin/bash
# Every GPU-machine figure BENCHMARKS.md waits for, as two prepared calls of the `device` tool (an
# NVIDIA H100/H200 lent to some sessions; see ../shared/gpu/README.md). Device time is short
# (15 minutes a session, a machine start included), so build and check everything here first.
#
# Here (the development machine), from the repository root:
#   benches/gpu_machine.sh prepare          release binary, stripped, into .dev/ (with cublas_ref.py
#                                           and the gzipped Fashion-MNIST test set), the GPU test
#                                           binaries into .dev-tests/; Vulkan loader packages into
#                                           .gl/ (about 5 minutes on 2 cores)
#   benches/gpu_machine.sh slim stats       the working tree travels whole and its tracked fixtures
#   benches/gpu_machine.sh slim forward     alone are about 80 MB, over the tool's 64 MiB: the
#                                           fixtures the call does not read are untracked in the
#                                           index (`git rm --cached`) and moved to $STASH (default
#                                           /tmp/subprune-fixtures), so that they travel neither
#                                           as tracked nor as untracked files ...
#   benches/gpu_machine.sh restore          ... and back afterwards (git status is clean again;
#                                           commit nothing in between)
# There (one `run` each, timeout_s 600; `slim` prints what to carry: [".dev", ".dev-tests", ".gl"]
# for stats, [".dev", ".gl"] for forward, so that each call stays under 64 MiB):
#   bash benches/gpu_machine.sh stats       GPU tests (checked and unchecked shaders), `bench`
#                                           (phases, fixed cost, device-resident inputs) next to
#                                           cuBLAS, the asym statistics (projected vs not), issue 9's ratios (benches/gpu_summary.py),
#                                           the tile configurations and row-split counts,
#                                           ResNet-56 pruned on the GPU and the CPU, the
#                                           synthetic ResNet-50, the
#                                           MNIST and ResNet-56 accuracies on the GPU
#   bash benches/gpu_machine.sh forward     benches/forward_eval.sh on VGG-11 and MobileNetV2
# Every step's output is appended to $OUT/stats.txt or $OUT/forward.txt (the tool brings back
# at most 8 files); its last lines are printed too.
set -u
cd "$(dirname "$0")/.."
STASH=${STASH:-/tmp/subprune-fixtures}
F=tests/fixtures
# Fixtures each call reads; the rest of tests/fixtures/*.{onnx,npy} is stashed for it.
KEEP_STATS="resnet56_cifar10.onnx cifar10_calib_512.npy cifar10_test_u8.npy cifar10_test_labels.npy
  mnist_cnn.onnx mnist_test_u8.npy mnist_test_labels.npy"
KEEP_FORWARD="vgg11_bn_fashion.onnx mobilenetv2_fashion.onnx fashion_test_labels.npy"
# The GPU test binaries carried to the machine (tests/NAME.rs): the statistics and greedy kernels
# against the CPU backend, and the backend kernels (with gpu_prune too the stats call carried
# 62 MiB of the 64 allowed: the asym pipeline's uploads show in prune_r56's report instead).
GPU_TESTS="gram_statistics backend_kernels"

# One `run` may take 600 s: each step gets at most its own limit and what is left before
# DEADLINE seconds (skipped when under 20 s are left), the most wanted steps first.
DEADLINE=${DEADLINE:-570}
step() { # step NAME SECONDS COMMAND...: run with a time limit, output appended to $LOG
  local name=$1 limit=$2; shift 2
  local left=$((DEADLINE - SECONDS))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 20 ]; then echo "== $name: skipped, $left s left" | tee -a "$LOG"; return; fi
  echo "== $name (at most $limit s): $*" | tee -a "$LOG"
  local start=$SECONDS
  timeout "$limit" "$@" > /tmp/step.txt 2>&1
  local rc=$?
  cat /tmp/step.txt >> "$LOG"
  echo "   rc $rc, $((SECONDS - start)) s" | tee -a "$LOG"
  tail -n 4 /tmp/step.txt
}

vulkan() {
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json XDG_RUNTIME_DIR=/tmp
  # Test binaries read files through the CARGO_MANIFEST_DIR they were built with.
  local manifest
  manifest=$(cat .dev/manifest_dir)
  if [ ! -e "$manifest" ]; then mkdir -p "$(dirname "$manifest")"; ln -s "$PWD" "$manifest"; fi
  .dev/subprune devices 2>&1 | tee -a "$LOG"
}

case "${1:-}" in
prepare)
  set -e
  cargo build --release --bin subprune
  mkdir -p .dev
  cp target/release/subprune .dev/subprune
  mkdir -p .dev-tests
  for t in $GPU_TESTS; do
    exe=$(cargo test --release --no-run --test "$t" --message-format=json 2>/dev/null |
      python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    t = m.get("target", {})
    if m.get("executable") and t.get("kind") == ["test"] and t.get("name") == sys.argv[1]:
        print(m["executable"])' "$t")
    cp "$exe" ".dev-tests/$t"
  done
  strip .dev/subprune; for t in $GPU_TESTS; do strip ".dev-tests/$t"; done
  pwd > .dev/manifest_dir
  cp ../shared/gpu/cublas_ref.py .dev/
  gzip -9 -c $F/fashion_test_u8.npy > .dev/fashion_test_u8.npy.gz
  for d in /.dev/ /.dev-tests/ /.gl/; do grep -qxF "$d" .git/info/exclude || echo "$d" >> .git/info/exclude; done
  if [ ! -d .gl ] || ! ls .gl/*.deb > /dev/null 2>&1; then
    mkdir -p .gl /tmp/amd64/partial
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    apt-get $o update
    (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
  fi
  du -sh .dev .dev-tests .gl
  ;;
slim)
  case "${2:-}" in
  stats) keep=$KEEP_STATS carry=".dev .dev-tests .gl" ;;
  forward) keep=$KEEP_FORWARD carry=".dev .gl" ;;
  *) echo "usage: $0 slim stats|forward" >&2; exit 2 ;;
  esac
  keep=$(echo $keep) # one space between names
  mkdir -p "$STASH"
  for f in $F/*.onnx $F/*.npy; do
    case " $keep " in
    *" $(basename "$f") "*) ;;
    *) git rm --cached -q "$f" && mv "$f" "$STASH/" ;;
    esac
  done
  tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -n 1 | cut -f1)
  carried=$(du -cb $carry | tail -n 1 | cut -f1)
  echo "travels: $(( (tracked + carried) >> 20 )) MiB (tracked $((tracked >> 20)), carry $carry: \
$((carried >> 20))); the limit is 64 MiB"
  ;;
restore)
  [ -d "$STASH" ] && mv "$STASH"/* $F/ 2>/dev/null
  git reset -q -- $F
  git status --short $F
  ;;
stats)
  LOG=$OUT/stats.txt
  vulkan
  B=.dev/subprune
  R56="$F/resnet56_cifar10.onnx --calib $F/cifar10_calib_512.npy --out /tmp/r56.onnx \
    --report /tmp/r56.json"
  step gpu_tests_checked 90 env SUBPRUNE_CHECKED_SHADERS=1 .dev-tests/gram_statistics
  step gpu_tests 120 bash -c '.dev-tests/gram_statistics && .dev-tests/backend_kernels'
  step bench 150 $B --backend gpu bench --reps 5 --no-asym
  step asym 90 $B --backend gpu bench --asym-only --reps 3
  step cublas 90 python3 .dev/cublas_ref.py
  step summary 20 python3 benches/gpu_summary.py "$LOG"
  step prune_r56 90 bash -c "time $B --backend gpu prune $R56; cat /tmp/r56.json; \
    time $B --backend cpu prune $R56; cat /tmp/r56.json"
  step accuracies 60 benches/forward_eval.sh $B
  step tiles_splits 120 $B --backend gpu bench --reps 3 --no-greedy --tiles --splits 1,2,4,8,16,32,64
  step resnet50 200 $B --backend gpu bench --network resnet50 --images 64
  ;;
forward)
  LOG=$OUT/forward.txt
  vulkan
  gunzip -c .dev/fashion_test_u8.npy.gz > $F/fashion_test_u8.npy
  step forward_eval 540 benches/forward_eval.sh .dev/subprune
  ;;
*)
  sed -n '2,/^set -u/p' "$0" | grep '^#'
  exit 2
  ;;
esac
