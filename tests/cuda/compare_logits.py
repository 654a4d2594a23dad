#!/usr/bin/env python3
"""Compares two float32 logits files [positions, vocab] (candidate vs reference).

Prints: positions, max relative error (max |a - b| / max |b| per position, worst position),
top-1 agreement, the first position whose relative error exceeds --threshold (the first
discrete divergence on chaotic models) and the max relative error before it.
"""
import argparse
import sys

import numpy as np


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("candidate")
    parser.add_argument("reference")
    parser.add_argument("--vocab", type=int, required=True)
    parser.add_argument("--threshold", type=float, default=1e-3)
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    a = np.fromfile(args.candidate, dtype=np.float32).reshape(-1, args.vocab).astype(np.float64)
    b = np.fromfile(args.reference, dtype=np.float32).reshape(-1, args.vocab).astype(np.float64)
    if a.shape != b.shape:
        print(f"{args.label}: shape mismatch {a.shape} vs {b.shape}")
        return 1
    if not np.all(np.isfinite(a)):
        print(f"{args.label}: candidate has non-finite values")
        return 1
    rel = np.abs(a - b).max(axis=1) / np.maximum(np.abs(b).max(axis=1), 1e-30)
    top1 = float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))
    above = np.nonzero(rel > args.threshold)[0]
    first = int(above[0]) if above.size else -1
    before = float(rel[:first].max()) if first > 0 else (float(rel.max()) if first < 0 else 0.0)
    print(f"{args.label}: positions {a.shape[0]}, max rel err {rel.max():.3g}, top-1 {top1:.4f}, "
          f"first divergence {first}, max rel err before it {before:.3g}, median {np.median(rel):.3g}, "
          f"positions below threshold {np.mean(rel <= args.threshold):.3f}, first 4: "
          + " ".join(f"{v:.2g}" for v in rel[:4]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
