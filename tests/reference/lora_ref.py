#!/usr/bin/python3
"""Independent check of a PEFT LoRA adapter skillgraft wrote: validate adapter_config.json and the
adapter's keys/shapes the way PEFT lays them out, fold W + scale * B @ A into the base weights in
float64 (transposed for GPT-2's fan_in_fan_out Conv1D), and compute the logits with the reference
model.

    /usr/bin/python3 tests/reference/lora_ref.py --model DIR --adapter DIR --inputs FILE --out FILE

FILE (--inputs) holds input_ids I64 [B, T]; --out gets logits F64 [B, T, V]. Exit 0 when the
adapter is well formed, 1 (with one line saying why) when it is not.
"""
import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pyref import models, st  # noqa: E402

PREFIX = "base_model.model."
SUFFIXES = {".lora_A.weight": "A", ".lora_B.weight": "B"}


class Bad(Exception):
    pass


def check_config(cfg, adapter_cfg):
    expect = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "bias": "none", "inference_mode": True,
              "fan_in_fan_out": models.is_gpt2(cfg)}
    for key, value in expect.items():
        if adapter_cfg.get(key) != value:
            raise Bad(f"adapter_config.json: {key} is {adapter_cfg.get(key)!r}, expected {value!r}")
    if not isinstance(adapter_cfg.get("r"), int) or adapter_cfg["r"] < 1:
        raise Bad(f"adapter_config.json: r is {adapter_cfg.get('r')!r}, expected a positive int")
    if not isinstance(adapter_cfg.get("lora_alpha"), (int, float)):
        raise Bad("adapter_config.json: lora_alpha missing")
    if not isinstance(adapter_cfg.get("target_modules"), list) or not adapter_cfg["target_modules"]:
        raise Bad("adapter_config.json: target_modules is not a non-empty list")
    for key in ("lora_dropout", "use_rslora", "base_model_name_or_path"):
        if key not in adapter_cfg:
            raise Bad(f"adapter_config.json: {key} missing")


def pairs_of(tensors):
    """-> {module: {"A": tensor, "B": tensor}} from PEFT keys."""
    pairs = {}
    for key, t in tensors.items():
        if not key.startswith(PREFIX):
            raise Bad(f"{key}: does not start with {PREFIX}")
        for suffix, which in SUFFIXES.items():
            if key.endswith(suffix):
                pairs.setdefault(key[len(PREFIX):-len(suffix)], {})[which] = t
                break
        else:
            raise Bad(f"{key}: not a lora_A/lora_B weight")
    for module, pair in pairs.items():
        if set(pair) != {"A", "B"}:
            raise Bad(f"{module}: lora_A and lora_B must both be present")
    return pairs


def merged_weights(cfg, w, adapter_cfg, pairs):
    r, alpha = adapter_cfg["r"], adapter_cfg["lora_alpha"]
    scale = alpha / (math.sqrt(r) if adapter_cfg["use_rslora"] else r)
    targets = adapter_cfg["target_modules"]
    w = {n: t.double() for n, t in w.items()}
    for module, pair in pairs.items():
        if not any(module == t or module.endswith("." + t) for t in targets):
            raise Bad(f"{module}: matches none of target_modules {targets}")
        name = module + ".weight"
        if name not in w:
            raise Bad(f"{module}: no such weight in the base model")
        W = w[name]
        n_out, n_in = (W.shape[1], W.shape[0]) if adapter_cfg["fan_in_fan_out"] else W.shape
        if tuple(pair["A"].shape) != (r, n_in) or tuple(pair["B"].shape) != (n_out, r):
            raise Bad(f"{module}: A {tuple(pair['A'].shape)} / B {tuple(pair['B'].shape)} do not fit "
                      f"in={n_in}, out={n_out}, r={r}")
        delta = scale * (pair["B"].double() @ pair["A"].double())  # (out, in)
        w[name] = W + (delta.t() if adapter_cfg["fan_in_fan_out"] else delta)
    return w


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    cfg, w = models.load_hf_dir(args.model)
    with open(os.path.join(args.adapter, "adapter_config.json")) as f:
        adapter_cfg = json.load(f)
    tensors, metadata = st.load_file(os.path.join(args.adapter, "adapter_model.safetensors"), with_metadata=True)
    try:
        check_config(cfg, adapter_cfg)
        if metadata.get("format") != "pt":
            raise Bad("adapter_model.safetensors: __metadata__ lacks format=pt")
        merged = merged_weights(cfg, w, adapter_cfg, pairs_of(tensors))
    except Bad as e:
        print(f"{args.adapter}: {e}")
        return 1
    input_ids = st.load_file(args.inputs)["input_ids"]
    logits = models.forward(cfg, merged, input_ids)
    st.save_file({"logits": logits}, args.out)
    print(f"{args.adapter}: {len(tensors) // 2} pairs, logits {tuple(logits.shape)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
