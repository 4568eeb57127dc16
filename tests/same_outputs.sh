#!/usr/bin/env bash
# Issue 21's "every command's output on the four fixtures is identical before and after": runs a
# fixed set of commands with two `subprune` executables and compares what they wrote.
#
#   tests/same_outputs.sh OLD_BINARY NEW_BINARY
#
# Each command runs twice, once per binary, in a fresh folder of its own (same relative paths, so
# that messages naming an output file agree), on the CPU backend. Compared:
#   - written files (.onnx, .npy, .svg), byte for byte;
#   - JSON (stdout of --json, --report files) with timing and throughput fields removed, and CSV
#     without its timing columns;
#   - stdout and stderr with durations and rates masked (a number followed by s, ms, µs, img/s,
#     …/s), and the binary's own path replaced.
# Prints one line per check and `N passed, M failed`; exits 1 on any difference. About 2 minutes
# with release binaries on two cores.
set -uo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 OLD_BINARY NEW_BINARY" >&2
  exit 2
fi
OLD=$(realpath "$1")
NEW=$(realpath "$2")
for b in "$OLD" "$NEW"; do
  [ -x "$b" ] || { echo "not an executable: $b" >&2; exit 2; }
done
FX=$(realpath "$(dirname "$0")/fixtures")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/subprune-same-outputs.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
PASS=0
FAIL=0

MNIST=(--mean 0.1307 --std 0.3081)
CIFAR=(--mean 0.485,0.456,0.406 --std 0.229,0.224,0.225)
FASHION=(--mean 0.2860 --std 0.3530)

# JSON without timing and throughput fields, keys sorted, one canonical text.
normalise_json() {
  python3 - "$1" <<'EOF'
import json, re, sys
TIMING = re.compile(r"(time|times|seconds?|secs|elapsed|duration|throughput|per_s|_ms|_us|_s)$")
def clean(v, parent=""):
    # Inside `phases` every float is a duration (byte and split counts are integers).
    if isinstance(v, dict):
        return {
            k: clean(x, k)
            for k, x in v.items()
            if not TIMING.search(k) and not (parent == "phases" and isinstance(x, float))
        }
    if isinstance(v, list):
        return [clean(x, parent) for x in v]
    return v
text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
try:
    print(json.dumps(clean(json.loads(text)), sort_keys=True, indent=1))
except ValueError:
    print(text, end="")
EOF
}

# CSV without timing columns.
normalise_csv() {
  python3 - "$1" <<'EOF'
import csv, re, sys
TIMING = re.compile(r"(time|times|seconds?|secs|elapsed|duration|throughput|per_s|_ms|_us|_s)$")
rows = list(csv.reader(open(sys.argv[1], newline="")))
keep = [i for i, h in enumerate(rows[0] if rows else []) if not TIMING.search(h)]
for r in rows:
    print(",".join(r[i] for i in keep if i < len(r)))
EOF
}

# Text with durations and rates masked, and the binary's path replaced.
normalise_text() {
  sed -E \
    -e "s#$OLD|$NEW#SUBPRUNE#g" \
    -e 's/[0-9][0-9.,]*(e[-+]?[0-9]+)? ?(s|ms|µs|us|ns|img\/s|images\/s|[kMG]?B\/s|[kMG]?FLOP\/s)\b/<T>/g' \
    -e 's/[0-9]+m[0-9]+(\.[0-9]+)?s\b/<T>/g' \
    -e 's/\[ *<T>\]/[<T>]/g' -e 's/ +<T>/ <T>/g' \
    "$1"
}

check() { # check NAME FILE_OLD FILE_NEW KIND
  local name=$1 a=$2 b=$3 kind=$4 same
  if [ ! -e "$a" ] && [ ! -e "$b" ]; then return; fi
  if [ ! -e "$a" ] || [ ! -e "$b" ]; then
    same=no
  else
    case $kind in
      bytes) cmp -s "$a" "$b" && same=yes || same=no ;;
      json) diff -q <(normalise_json "$a") <(normalise_json "$b") >/dev/null && same=yes || same=no ;;
      csv) diff -q <(normalise_csv "$a") <(normalise_csv "$b") >/dev/null && same=yes || same=no ;;
      text) diff -q <(normalise_text "$a") <(normalise_text "$b") >/dev/null && same=yes || same=no ;;
    esac
  fi
  if [ $same = yes ]; then
    PASS=$((PASS + 1))
    echo "ok    $name"
  else
    FAIL=$((FAIL + 1))
    echo "DIFF  $name"
    if [ -e "$a" ] && [ -e "$b" ] && [ "$kind" != bytes ]; then
      if [ "$kind" = json ] || [ "$kind" = csv ]; then
        diff <(normalise_$kind "$a") <(normalise_$kind "$b") | head -8 | sed 's/^/      /'
      else
        diff <(normalise_text "$a") <(normalise_text "$b") | head -8 | sed 's/^/      /'
      fi
    fi
  fi
}

# run NAME ARGS...: the command with each binary in WORK/NAME/{old,new}, then every check.
run() {
  local name=$1
  shift
  for side in old new; do
    local dir="$WORK/$name/$side" bin=$OLD
    [ $side = new ] && bin=$NEW
    mkdir -p "$dir"
    (cd "$dir" && SUBPRUNE_CACHE_DIR="$WORK/.cache-$side" "$bin" "$@" >stdout 2>stderr; echo $? >status)
  done
  local a="$WORK/$name/old" b="$WORK/$name/new"
  check "$name: exit status" "$a/status" "$b/status" bytes
  if head -c1 "$a/stdout" | grep -q '[{[]'; then
    check "$name: stdout (json)" "$a/stdout" "$b/stdout" json
  else
    check "$name: stdout" "$a/stdout" "$b/stdout" text
  fi
  check "$name: stderr" "$a/stderr" "$b/stderr" text
  for f in "$a"/*; do
    local base
    base=$(basename "$f")
    case $base in
      stdout | stderr | status) ;;
      *.json) check "$name: $base" "$f" "$b/$base" json ;;
      *.csv) check "$name: $base" "$f" "$b/$base" csv ;;
      *) check "$name: $base" "$f" "$b/$base" bytes ;;
    esac
  done
  for f in "$b"/*; do # a file only the new binary wrote
    [ -e "$a/$(basename "$f")" ] || check "$name: $(basename "$f")" "$a/$(basename "$f")" "$f" bytes
  done
}

MODELS=(mnist_cnn resnet56_cifar10 vgg11_bn_fashion mobilenetv2_fashion)
declare -A TEST=([mnist_cnn]=mnist [resnet56_cifar10]=cifar10 [vgg11_bn_fashion]=fashion [mobilenetv2_fashion]=fashion)
declare -A CALIB=([mnist_cnn]=mnist [resnet56_cifar10]=cifar10 [vgg11_bn_fashion]=fashion [mobilenetv2_fashion]=fashion)

for m in "${MODELS[@]}"; do
  case ${TEST[$m]} in
    mnist) norm=("${MNIST[@]}") ;;
    cifar10) norm=("${CIFAR[@]}") ;;
    fashion) norm=("${FASHION[@]}") ;;
  esac
  run "info-$m" info "$FX/$m.onnx"
  run "info-json-$m" info --json "$FX/$m.onnx"
  run "eval-$m" --backend cpu eval "$FX/$m.onnx" --data "$FX/${TEST[$m]}_test_u8.npy" \
    --labels "$FX/${TEST[$m]}_test_labels.npy" "${norm[@]}" --json --limit 200
done
# A refused command: the message, not only the exit status.
run "eval-bad-labels" --backend cpu eval "$FX/mnist_cnn.onnx" --data "$FX/mnist_test_u8.npy" \
  --labels "$FX/cifar10_test_labels.npy" "${MNIST[@]}" --limit 200

PRUNE_MNIST=(--backend cpu prune "$FX/mnist_cnn.onnx" --calib "$FX/mnist_calib_512.npy"
  --calib-images 256 --report r.json --out o.onnx)
for variant in layer seq asym; do
  run "prune-mnist-$variant" "${PRUNE_MNIST[@]}" --variant "$variant"
done
run "prune-mnist-weight-norm" "${PRUNE_MNIST[@]}" --method weight-norm
run "prune-mnist-no-reweight" "${PRUNE_MNIST[@]}" --no-reweight
run "prune-mnist-uniform-2x" "${PRUNE_MNIST[@]}" --compression 2 --budget uniform
run "prune-mnist-error-2x" "${PRUNE_MNIST[@]}" --compression 2 --budget error
run "prune-mnist-error-2x-layer" "${PRUNE_MNIST[@]}" --compression 2 --budget error --variant layer
run "prune-mnist-weight-norm-error-2x" "${PRUNE_MNIST[@]}" --method weight-norm --compression 2 \
  --budget error
run "prune-mnist-bad-compression" "${PRUNE_MNIST[@]}" --compression 1
run "prune-resnet56-asym" --backend cpu prune "$FX/resnet56_cifar10.onnx" \
  --calib "$FX/cifar10_calib_512.npy" --calib-images 128 --keep-fraction 0.5 --report r.json \
  --out o.onnx
run "prune-mobilenetv2-asym" --backend cpu prune "$FX/mobilenetv2_fashion.onnx" \
  --calib "$FX/fashion_calib_512.npy" --calib-images 128 --keep-fraction 0.5 --report r.json \
  --out o.onnx

run "compare-mnist" --backend cpu compare "$FX/mnist_cnn.onnx" --calib "$FX/mnist_calib_512.npy" \
  --calib-images 128 --data "$FX/mnist_test_u8.npy" --labels "$FX/mnist_test_labels.npy" \
  "${MNIST[@]}" --limit 500 --methods greedy,weight-norm --compressions 2,4 --out cmp

# `select` on a small layer: the first 64 MNIST calibration images as a conv's inputs, and a
# 5 × 1 × 3 × 3 weight (subprune writes no .npy of its own, so these bytes are written here).
python3 - "$WORK/select-data" "$FX/mnist_calib_512.npy" <<'EOF'
import os, struct, sys
out, calib = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
def npy(path, shape, values):
    dims = ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "")
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }" % dims
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        f.write(struct.pack("<%df" % len(values), *values))
raw = open(calib, "rb").read()
start = 10 + struct.unpack("<H", raw[8:10])[0]
n = 64 * 28 * 28
npy(f"{out}/b.npy", (64, 1, 28, 28), struct.unpack("<%df" % n, raw[start:start + 4 * n]))
npy(f"{out}/w.npy", (5, 1, 3, 3), [((i * 37) % 17 - 8) / 8.0 for i in range(45)])
EOF
SEL=(--backend cpu select --inputs "$WORK/select-data/b.npy" --weight "$WORK/select-data/w.npy"
  --padding 1,1)
run "select-conv-refused" "${SEL[@]}" --keep 0
run "select-conv-json" "${SEL[@]}" --keep-fraction 0.5 --json --out-weight w2.npy
run "select-conv-no-reweight" "${SEL[@]}" --keep 3 --no-reweight --out-weight w2.npy

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
