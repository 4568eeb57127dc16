"""Checks a model file written by subprune the way other tools will read it: the ONNX checker's
full check (types and shapes inferred and compared with every declaration), then an
onnxruntime session that runs one batch of random inputs and must give finite outputs.

Usage: check_onnx.py MODEL.onnx   (exit 0 and "ok" when the model passes, else the reason)
"""

import sys

import numpy as np
import onnx
import onnxruntime as ort


def main(path):
    # By path, so that external data beside the model is found and checked too.
    onnx.checker.check_model(path, full_check=True)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for inp in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 2 for d in inp.shape]
        feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
    for out, value in zip(session.get_outputs(), session.run(None, feeds)):
        if not np.all(np.isfinite(value)):
            raise SystemExit(f"{path}: output {out.name} is not finite")
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1])
