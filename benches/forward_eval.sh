#!/bin/bash
# The GPU executor on a real GPU, with the release binary only (no cargo, no tract needed):
#   1. the fixture accuracies on the full test sets with `--backend gpu` (EVALUATION.md's counts:
#      9905/10000, 789/846, 9408/10000, 9421/10000);
#   2. forward images/s of the CPU and GPU executors on the first 512 Fashion-MNIST test images
#      for VGG-11 and MobileNetV2 (batches of 64 and 512; `eval --json` reports images/s of the
#      forward pass, executor construction excluded), and on all 10000 images on the GPU.
# Usage: benches/forward_eval.sh [path/to/subprune]   (default target/release/subprune)
set -u
B=${1:-target/release/subprune}
F=tests/fixtures
MN="--mean 0.1307 --std 0.3081"
CI="--mean 0.485,0.456,0.406 --std 0.229,0.224,0.225"
FA="--mean 0.2860 --std 0.3530"
# A model or data file that is not here (benches/gpu_machine.sh sends a part of the fixtures at a
# time) is skipped, and said so.
ev() {
  if [ ! -f "$1" ] || [ ! -f "$3" ]; then echo "skipped: $1 or $3 is not here"; return; fi
  "$B" eval "$@" --json
}
"$B" devices
echo "== accuracies on the GPU, full test sets"
ev $F/mnist_cnn.onnx --data $F/mnist_test_u8.npy --labels $F/mnist_test_labels.npy $MN --batch 256 --backend gpu
ev $F/resnet56_cifar10.onnx --data $F/cifar10_test_u8.npy --labels $F/cifar10_test_labels.npy $CI --batch 256 --backend gpu
ev $F/vgg11_bn_fashion.onnx --data $F/fashion_test_u8.npy --labels $F/fashion_test_labels.npy $FA --batch 256 --backend gpu
ev $F/mobilenetv2_fashion.onnx --data $F/fashion_test_u8.npy --labels $F/fashion_test_labels.npy $FA --batch 256 --backend gpu
echo "== 512 images, CPU vs GPU executor"
for m in vgg11_bn_fashion mobilenetv2_fashion; do
  for b in 64 512; do
    for be in cpu gpu; do
      echo "$m, batch $b, $be"
      ev $F/$m.onnx --data $F/fashion_test_u8.npy --labels $F/fashion_test_labels.npy $FA --limit 512 --batch $b --backend $be
    done
  done
done
echo "== 10000 images on the GPU"
for m in vgg11_bn_fashion mobilenetv2_fashion; do
  for b in 512 1024; do
    echo "$m, batch $b, gpu"
    ev $F/$m.onnx --data $F/fashion_test_u8.npy --labels $F/fashion_test_labels.npy $FA --batch $b --backend gpu
  done
done
