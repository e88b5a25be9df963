#!/usr/bin/python3
"""Independent merge reference: computes every merge method from its definition (mergekit's
generalized task arithmetic, TIES, DARE, and skillgraft's sparse union), in float64 numpy, for the
cases a JSON job file lists, and writes the merged tensors.

    /usr/bin/python3 tests/reference/merge_ref.py --job JOB.json --out OUT.safetensors

JOB: {"base": DIR, "inputs": [PATH, ...], "cases": [{"name", "method", "inputs": [i, ...],
"weights": [...], "densities": [...], "lambda", "normalize" (bool), "rescale", "seed", "overlap"}]}.
An input PATH is a checkpoint directory (model.safetensors) or a sparse skill file (<name>.idx /
<name>.delta). OUT holds "<case>/<tensor>" as F64.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pyref import st  # noqa: E402

MASK64 = (1 << 64) - 1


def splitmix64(x):
    """splitmix64 over a numpy uint64 array (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def splitmix64_int(x):
    return int(splitmix64(np.array([x & MASK64], dtype=np.uint64))[0])


def fnv1a64(text):
    h = 0xCBF29CE484222325
    for byte in text.encode("utf-8"):
        h ^= byte
        h = (h * 0x100000001B3) & MASK64
    return h


def dare_keep(seed, name, position, numel, density):
    """The documented DARE mask: keep j iff (splitmix64(stream + j) >> 40) < floor(density * 2^24)."""
    stream = splitmix64_int(splitmix64_int(seed) ^ splitmix64_int((fnv1a64(name) + position) & MASK64))
    j = np.arange(numel, dtype=np.uint64)
    r = splitmix64(j + np.uint64(stream)) >> np.uint64(40)
    return r < np.uint64(math.floor(density * 16777216.0))


def load_input(path, base):
    """name -> (float32 delta, coverage bool) over the flat base tensors; absent names left out."""
    if os.path.isdir(path):
        tensors = st.load_file(os.path.join(path, "model.safetensors"))
        out = {}
        for name, b in base.items():
            theta = tensors[name].to(torch.float32).numpy().reshape(-1)
            delta = (theta - b).astype(np.float32)  # float32 subtraction, as the merge does
            out[name] = (delta, delta != 0, theta)
        return out
    tensors, meta = st.load_file(path, with_metadata=True)
    if meta.get("kind") != "sparse":
        raise SystemExit(f"{path}: not a sparse skill")
    out = {}
    for key in tensors:
        if not key.endswith(".idx"):
            continue
        name = key[: -len(".idx")]
        idx = tensors[key].numpy().astype(np.int64)
        d = tensors[name + ".delta"].numpy().astype(np.float32)
        delta = np.zeros(base[name].size, dtype=np.float32)
        covered = np.zeros(base[name].size, dtype=bool)
        delta[idx] = d
        covered[idx] = True
        out[name] = (delta, covered, (base[name] + delta).astype(np.float32))
    return out


def trim_top_k(delta, density):
    """TIES trim: keep the floor(density * n) largest |delta| (float32 magnitudes), lower index first on ties."""
    n = delta.size
    if density >= 1:
        return delta
    k = int(math.floor(density * n))
    kept = np.zeros(n, dtype=np.float32)
    if k <= 0:
        return kept
    magnitude = np.abs(delta)
    order = np.lexsort((np.arange(n), -magnitude.astype(np.float64)))  # by -|d|, then index
    kept[order[:k]] = delta[order[:k]]
    return kept


def consensus(deltas, weights, normalize):
    weighted = [np.float64(w) * d.astype(np.float64) for w, d in zip(weights, deltas)]
    elected = np.sum(weighted, axis=0) >= 0
    total = np.zeros_like(weighted[0])
    divisor = np.zeros_like(weighted[0])
    for w, wd in zip(weights, weighted):
        agree = np.where(elected, wd > 0, wd < 0)
        total += np.where(agree, wd, 0.0)
        divisor += np.where(agree, w, 0.0)
    if normalize:
        divisor[divisor == 0] = 1.0
        return total / divisor
    return total


def merge_case(case, base, inputs):
    method = case["method"]
    chosen = [inputs[i] for i in case["inputs"]]
    weights = case["weights"]
    densities = case["densities"]
    lam = case.get("lambda", 1.0)
    normalize = case["normalize"]
    out = {}
    for name, b in base.items():
        b64 = b.astype(np.float64)
        present = [(k, inp[name]) for k, inp in enumerate(chosen) if name in inp]
        zero = np.zeros(b.size, dtype=np.float32)
        deltas = [inp[name][0] if name in inp else zero for inp in chosen]
        if method == "linear":
            thetas = [inp[name][2].astype(np.float64) if name in inp else b64 for inp in chosen]
            total = sum(np.float64(w) * t for w, t in zip(weights, thetas))
            out[name] = total / sum(weights) if normalize else total
            continue
        if method == "task_arithmetic":
            merged = sum(np.float64(w) * d.astype(np.float64) for w, d in zip(weights, deltas))
            if normalize:
                s = sum(weights)
                merged = merged / (s if abs(s) >= 1e-8 else 1.0)
        elif method == "ties":
            trimmed = [trim_top_k(d, p) if name in inp else d for d, p, inp in zip(deltas, densities, chosen)]
            merged = consensus(trimmed, weights, normalize)
        elif method in ("dare_linear", "dare_ties"):
            dropped = []
            for position, (d, p, inp) in enumerate(zip(deltas, densities, chosen)):
                if p < 1 and name in inp:
                    keep = dare_keep(case["seed"], name, position, d.size, p)
                    d = np.where(keep, d / np.float32(p) if case["rescale"] else d, np.float32(0)).astype(np.float32)
                dropped.append(d)
            if method == "dare_linear":
                merged = sum(np.float64(w) * d.astype(np.float64) for w, d in zip(weights, dropped))
                if normalize:
                    merged = merged / sum(weights)
            else:
                merged = consensus(dropped, weights, normalize)
        elif method == "sparse_union":
            merged = np.zeros(b.size, dtype=np.float64)
            for j in range(b.size):
                cover = [(k, inp[0][j], weights[k]) for k, inp in present if inp[1][j]]
                if not cover:
                    continue
                if len(cover) == 1:
                    merged[j] = cover[0][1]
                elif case["overlap"] == "mean":
                    merged[j] = sum(w * float(d) for _, d, w in cover) / sum(w for _, _, w in cover)
                elif case["overlap"] == "magnitude":
                    best = cover[0]
                    for item in cover[1:]:
                        if abs(item[1]) > abs(best[1]):
                            best = item
                    merged[j] = best[1]
                else:
                    best = cover[0]
                    for item in cover[1:]:
                        if item[2] > best[2]:
                            best = item
                    merged[j] = best[1]
        else:
            raise SystemExit(f"unknown method {method}")
        out[name] = b64 + lam * merged
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--job", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with open(args.job) as f:
        job = json.load(f)
    base_tensors = st.load_file(os.path.join(job["base"], "model.safetensors"))
    shapes = {name: list(t.shape) for name, t in base_tensors.items()}
    base = {name: t.to(torch.float32).numpy().reshape(-1) for name, t in base_tensors.items()}
    inputs = [load_input(path, base) for path in job["inputs"]]
    result = {}
    for case in job["cases"]:
        for name, values in merge_case(case, base, inputs).items():
            result[case["name"] + "/" + name] = torch.from_numpy(np.asarray(values, dtype=np.float64)).reshape(shapes[name])
    st.save_file(result, args.out)


if __name__ == "__main__":
    main()
