#!/usr/bin/python3
"""Checks that a model directory skillgraft saved loads in Python the way an HF user loads it:
config.json names a known HF class, the weights parse with the independent safetensors reader, and
the independent float64 reference model computes the expected logits.

    /usr/bin/python3 tests/reference/check_saved_model.py --dir DIR --reference NAME.reference.safetensors

Exit 0 when the logits match within --tolerance (relative to their largest magnitude), 1 if not.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pyref import models, st  # noqa: E402

KNOWN_CLASSES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                 "qwen2": "Qwen2ForCausalLM", "gpt2": "GPT2LMHeadModel"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--reference", required=True)
    ap.add_argument("--tolerance", type=float, default=1e-9)
    args = ap.parse_args()
    cfg, w = models.load_hf_dir(args.dir)
    expected_class = KNOWN_CLASSES.get(cfg.get("model_type"))
    if expected_class is None or cfg.get("architectures") != [expected_class]:
        print(f"config.json: model_type {cfg.get('model_type')!r} with architectures "
              f"{cfg.get('architectures')!r} is not what HF expects")
        return 1
    for path in os.listdir(args.dir):
        if path.endswith(".safetensors"):
            _, metadata = st.load_file(os.path.join(args.dir, path), with_metadata=True)
            if (metadata or {}).get("format") != "pt":
                print(f"{path}: __metadata__ lacks format=pt, which HF's loader requires")
                return 1
    ref = st.load_file(args.reference)
    logits = models.forward(cfg, {n: t.double() for n, t in w.items()}, ref["input_ids"])
    scale = ref["logits"].abs().max().item()
    rel = (logits - ref["logits"]).abs().max().item() / scale
    print(f"{args.dir}: logits max relative difference {rel:.3e}")
    return 0 if rel <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
