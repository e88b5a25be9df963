#!/usr/bin/python3
"""Independent references for LoRA skills (tests/unit/test_lora_skill.cpp): torch / numpy in float64,
safetensors read and written by hand (8-byte little-endian header length, JSON header, raw bytes),
PEFT's rules re-implemented from PEFT's source, never skillgraft's code.

  lora_skill_ref.py svd DELTAS.safetensors RANKS ENERGIES OUT.json
      Per tensor of DELTAS (2-D float32, (out, in) already): the Eckart-Young relative error
      sqrt(sum_{i>=r} s_i^2) / ||delta|| for each rank in RANKS (comma list, torch.linalg.svd in
      float64), and for each energy E in ENERGIES the smallest k with sum_{i<k} s_i^2 >= E sum s_i^2
      (numpy.linalg.svd, cumulative sums) with the distance of E to the nearest cumulative share
      ("margin", so the caller can tell a tie from a disagreement).
  lora_skill_ref.py peft-write SHAPES.json ARCH ADAPTER_DIR EXPECTED.safetensors
      Writes a PEFT LoRA adapter for the base whose weight shapes SHAPES.json lists (ARCH llama or
      gpt2): use_rslora, rank_pattern and alpha_pattern with overlapping keys (PEFT takes the first
      match in order), one F16 pair, one ".default" key; and the delta each module's weight gets,
      F64, in the weight's stored layout (GPT-2 Conv1D transposed: fan_in_fan_out).
  lora_skill_ref.py peft-check ADAPTER_DIR EXPECTED.safetensors [ADAPTER_DIR EXPECTED ...]
      Reads each adapter (skillgraft's export) with PEFT's rules and compares every module's delta
      with EXPECTED (F64, stored layout); prints "ok N" per adapter or one line per problem, exits 1
      on any.
"""
import json
import math
import os
import re
import struct
import sys

import numpy as np

DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16}
NAMES = {np.dtype(v).str: k for k, v in DTYPES.items()}


def read_safetensors(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    data = raw[8 + n:]
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        arr = np.frombuffer(data[b:e], dtype=np.dtype(DTYPES[info["dtype"]]).newbyteorder("<"))
        out[name] = arr.reshape(info["shape"]).copy()
    return out


def write_safetensors(path, tensors, metadata=None):
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        blob = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": NAMES[np.dtype(arr.dtype).str.replace(">", "<")], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def svd(deltas_path, ranks, energies, out_path):
    import torch  # only here: the PEFT modes stay numpy-only (torch takes seconds to import)

    result = {}
    for name, delta in read_safetensors(deltas_path).items():
        d64 = torch.from_numpy(delta.astype(np.float64))
        s = torch.linalg.svd(d64, full_matrices=False).S
        norm = torch.linalg.norm(d64).item()
        ey = {str(r): math.sqrt(float((s[r:] ** 2).sum())) / norm for r in ranks}
        s_np = np.linalg.svd(delta.astype(np.float64), compute_uv=False)
        share = np.cumsum(s_np ** 2) / np.sum(s_np ** 2)
        energy = {}
        for e in energies:
            k = int(np.argmax(share >= e)) + 1
            energy[repr(e)] = {"rank": k, "margin": float(np.min(np.abs(share - e)))}
        result[name] = {"eckart_young": ey, "energy": energy, "full_rank": int(s.shape[0])}
    json.dump(result, open(out_path, "w"), indent=1)


# --- PEFT's rules (peft/tuners/lora/model.py, peft/utils/other.py, peft/tuners/tuners_utils.py) ---

def get_pattern_key(pattern_keys, key_to_match):
    for key in pattern_keys:
        if re.match(rf"(.*\.)?({key})$", key_to_match):
            return key
    return key_to_match


def module_targeted(target_modules, key):
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, key) is not None
    return any(key == t or key.endswith("." + t) for t in target_modules)


def peft_deltas(adapter_dir):
    """{module: delta (out, in) float64} and the config, the way PEFT merges each layer."""
    config = json.load(open(os.path.join(adapter_dir, "adapter_config.json")))
    tensors = read_safetensors(os.path.join(adapter_dir, "adapter_model.safetensors"))
    pairs = {}
    for key, arr in tensors.items():
        m = re.fullmatch(r"base_model\.model\.(.+)\.lora_([AB])(\.default)?\.weight", key)
        assert m, key
        pairs.setdefault(m.group(1), {})[m.group(2)] = arr
    deltas = {}
    for module, pair in pairs.items():
        assert module_targeted(config["target_modules"], module), module
        r = config["rank_pattern"].get(get_pattern_key(config["rank_pattern"].keys(), module), config["r"])
        alpha = config["alpha_pattern"].get(get_pattern_key(config["alpha_pattern"].keys(), module), config["lora_alpha"])
        scaling = alpha / math.sqrt(r) if config["use_rslora"] else alpha / r
        a = pair["A"].astype(np.float64)
        b = pair["B"].astype(np.float64)
        assert a.shape[0] == r and b.shape[1] == r, (module, a.shape, b.shape, r)
        deltas[module] = (b @ a) * scaling
    return deltas, config


def is_conv1d(name):
    return name.startswith("transformer.h.") and name.endswith(
        (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight"))


def peft_write(shapes_path, arch, adapter_dir, expected_path):
    shapes = json.load(open(shapes_path))
    rng = np.random.default_rng(7)
    if arch == "llama":
        config = {
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8, "use_rslora": True,
            "target_modules": ["q_proj", "v_proj", "down_proj"], "fan_in_fan_out": False, "bias": "none",
            "base_model_name_or_path": "tiny-llama", "lora_dropout": 0.05, "use_dora": False,
            # First match wins: layer 1's v_proj takes 3 (before the "v_proj" key), layer 0's takes 6.
            "rank_pattern": {r"layers\.1\..*v_proj": 3, "v_proj": 6, "model.layers.1.self_attn.q_proj": 2},
            "alpha_pattern": {"down_proj": 5.5, "model.layers.0.self_attn.q_proj": 3},
        }
        layers = sorted({int(n.split(".")[2]) for n in shapes if n.startswith("model.layers.")})
        modules = [f"model.layers.{l}.{m}" for l in layers for m in ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj")]
        f16 = "model.layers.0.mlp.down_proj"
        default_key = "model.layers.1.self_attn.v_proj"
    else:
        config = {
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 16, "use_rslora": False,
            "target_modules": ["c_attn", "mlp.c_fc"], "fan_in_fan_out": True, "bias": "none",
            "base_model_name_or_path": "tiny-gpt2", "lora_dropout": 0.0,
            "rank_pattern": {"h.1.attn.c_attn": 2}, "alpha_pattern": {"c_fc": 3},
        }
        layers = sorted({int(n.split(".")[2]) for n in shapes if n.startswith("transformer.h.")})
        modules = [f"transformer.h.{l}.{m}" for l in layers for m in ("attn.c_attn", "mlp.c_fc")]
        f16 = "transformer.h.0.mlp.c_fc"
        default_key = None
    tensors, expected = {}, {}
    for module in modules:
        name = module + ".weight"
        shape = shapes[name]
        out_f, in_f = (shape[1], shape[0]) if is_conv1d(name) else (shape[0], shape[1])
        r = config["rank_pattern"].get(get_pattern_key(config["rank_pattern"].keys(), module), config["r"])
        dtype = np.float16 if module == f16 else np.float32
        a = rng.standard_normal((r, in_f)).astype(dtype) * dtype(0.3)
        b = rng.standard_normal((out_f, r)).astype(dtype) * dtype(0.3)
        infix = ".default" if module == default_key else ""
        tensors[f"base_model.model.{module}.lora_A{infix}.weight"] = a
        tensors[f"base_model.model.{module}.lora_B{infix}.weight"] = b
    os.makedirs(adapter_dir, exist_ok=True)
    with open(os.path.join(adapter_dir, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    write_safetensors(os.path.join(adapter_dir, "adapter_model.safetensors"), tensors, {"format": "pt"})
    deltas, _ = peft_deltas(adapter_dir)
    for module, delta in deltas.items():
        name = module + ".weight"
        expected[name] = delta.T if is_conv1d(name) else delta
    write_safetensors(expected_path, expected)


def peft_check(adapter_dir, expected_path):
    expected = read_safetensors(expected_path)
    deltas, config = peft_deltas(adapter_dir)
    problems = []
    if config.get("use_dora") or config.get("bias") != "none":
        problems.append("config: use_dora / bias")
    for module, delta in deltas.items():
        name = module + ".weight"
        if is_conv1d(name) != bool(config["fan_in_fan_out"]) and is_conv1d(name):
            problems.append(f"{name}: Conv1D but fan_in_fan_out is false")
        got = delta.T if is_conv1d(name) else delta
        if name not in expected:
            problems.append(f"{name}: not expected")
            continue
        want = expected[name]
        err = float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-300))
        if err > 1e-12:
            problems.append(f"{name}: relative difference {err}")
    for name in expected:
        if name[: -len(".weight")] not in deltas:
            problems.append(f"{name}: missing from the adapter")
    for p in problems:
        print(f"{adapter_dir}: {p}")
    if not problems:
        print(f"ok {len(deltas)}")
    return 1 if problems else 0


def main():
    mode = sys.argv[1]
    if mode == "svd":
        svd(sys.argv[2], [int(x) for x in sys.argv[3].split(",")], [float(x) for x in sys.argv[4].split(",")], sys.argv[5])
        return 0
    if mode == "peft-write":
        peft_write(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
        return 0
    if mode == "peft-check":
        pairs = sys.argv[2:]
        return max(peft_check(pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2))
    print(f"unknown mode {mode}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
