#!/usr/bin/python3
"""Write deterministic tiny random HF checkpoints and float64 reference outputs.

    /usr/bin/python3 tests/reference/make_model_refs.py --out DIR

For each model NAME: DIR/NAME/ (config.json + model.safetensors, or shards + index) and
DIR/NAME.reference.safetensors with input_ids I64 [2, 9], logits F64 [2, 9, V], loss F64 [],
and grad.<param> F64 for every parameter in the checkpoint (buffers excluded).
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pyref import models, st  # noqa: E402

BATCH, SEQ = 2, 9


class Gen:
    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)

    def normal(self, *shape, std):
        return torch.randn(*shape, generator=self.g, dtype=torch.float64).mul(std).float()

    def norm_weight(self, n):  # 1 + 0.1 * noise
        return (1.0 + 0.1 * torch.randn(n, generator=self.g, dtype=torch.float64)).float()

    def ids(self, vocab):
        return torch.randint(0, vocab, (BATCH, SEQ), generator=self.g, dtype=torch.int64)


def llama_weights(cfg, gen, qkv_bias, untied):
    C, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = models.llama_head_dim(cfg)
    w = {"model.embed_tokens.weight": gen.normal(V, C, std=0.3)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = gen.norm_weight(C)
        for n, out in (("q", H * D), ("k", KV * D), ("v", KV * D)):
            w[p + f"self_attn.{n}_proj.weight"] = gen.normal(out, C, std=0.15)
            if qkv_bias:
                w[p + f"self_attn.{n}_proj.bias"] = gen.normal(out, std=0.1)
        w[p + "self_attn.o_proj.weight"] = gen.normal(C, H * D, std=0.15)
        w[p + "post_attention_layernorm.weight"] = gen.norm_weight(C)
        w[p + "mlp.gate_proj.weight"] = gen.normal(I, C, std=0.15)
        w[p + "mlp.up_proj.weight"] = gen.normal(I, C, std=0.15)
        w[p + "mlp.down_proj.weight"] = gen.normal(C, I, std=0.12)
    w["model.norm.weight"] = gen.norm_weight(C)
    if untied:
        w["lm_head.weight"] = gen.normal(V, C, std=0.25)
    return w


def gpt2_weights(cfg, gen, prefix, buffers):
    C, V, NP = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"]
    P = "transformer." if prefix else ""
    w = {P + "wte.weight": gen.normal(V, C, std=0.3), P + "wpe.weight": gen.normal(NP, C, std=0.1)}
    for i in range(cfg["n_layer"]):
        p = f"{P}h.{i}."
        for ln in ("ln_1", "ln_2"):
            w[p + ln + ".weight"] = gen.norm_weight(C)
            w[p + ln + ".bias"] = gen.normal(C, std=0.05)
        for name, n_in, n_out in (("attn.c_attn", C, 3 * C), ("attn.c_proj", C, C),
                                  ("mlp.c_fc", C, 4 * C), ("mlp.c_proj", 4 * C, C)):
            w[p + name + ".weight"] = gen.normal(n_in, n_out, std=0.15)  # Conv1D: [in, out]
            w[p + name + ".bias"] = gen.normal(n_out, std=0.05)
        if buffers:
            w[p + "attn.bias"] = torch.ones(NP, NP).tril().view(1, 1, NP, NP)
    w[P + "ln_f.weight"] = gen.norm_weight(C)
    w[P + "ln_f.bias"] = gen.normal(C, std=0.05)
    return w


def llama_config(arch, model_type, **kw):
    cfg = {"architectures": [arch], "model_type": model_type, "hidden_act": "silu",
           "initializer_range": 0.02, "max_position_embeddings": 128, "bos_token_id": 1,
           "eos_token_id": 2, "torch_dtype": "float32", "use_cache": True}
    cfg.update(kw)
    return cfg


GPT2_CFG = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 48,
            "n_layer": 2, "n_head": 4, "n_positions": 32, "n_ctx": 32, "n_inner": None,
            "vocab_size": 71, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new",
            "bos_token_id": 70, "eos_token_id": 70, "tie_word_embeddings": True,
            "scale_attn_weights": True, "torch_dtype": "float32"}


def build_models():
    """-> list of (name, config, weights, input_ids, shards or None)."""
    out = []
    cfg = llama_config("Qwen2ForCausalLM", "qwen2", hidden_size=64, intermediate_size=96,
                       num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
                       vocab_size=101, rms_norm_eps=1e-6, rope_theta=1000000.0,
                       tie_word_embeddings=False, use_sliding_window=False,
                       sliding_window=None, max_window_layers=2)
    gen = Gen(1001)
    out.append(("llama_gqa_bias", cfg, llama_weights(cfg, gen, True, True), gen.ids(101), None))

    cfg = llama_config("LlamaForCausalLM", "llama", hidden_size=48, intermediate_size=80,
                       num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
                       vocab_size=67, rms_norm_eps=1e-5, rope_theta=10000.0,
                       tie_word_embeddings=True, attention_bias=False, mlp_bias=False)
    gen = Gen(1002)
    w = llama_weights(cfg, gen, False, False)
    shard1 = {n for n in w if n.startswith("model.embed_tokens") or n.startswith("model.layers.0.")
              or n.startswith("model.layers.1.self_attn")}
    out.append(("llama_tied", cfg, w, gen.ids(67), [shard1, set(w) - shard1]))

    cfg = llama_config("MistralForCausalLM", "mistral", hidden_size=48, intermediate_size=80,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       head_dim=16, vocab_size=59, rms_norm_eps=1e-5, rope_theta=10000.0,
                       tie_word_embeddings=False, sliding_window=None)
    gen = Gen(1003)
    out.append(("llama_headdim", cfg, llama_weights(cfg, gen, False, True), gen.ids(59), None))

    gen = Gen(1004)
    w = gpt2_weights(GPT2_CFG, gen, prefix=True, buffers=True)
    ids = gen.ids(GPT2_CFG["vocab_size"])
    out.append(("gpt2", dict(GPT2_CFG), w, ids, None))
    w2 = {n[len("transformer."):]: t for n, t in w.items() if not models.is_buffer(n)}
    out.append(("gpt2_noprefix", dict(GPT2_CFG), w2, ids.clone(), None))
    return out


def write_checkpoint(d, cfg, w, shards):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    meta = {"format": "pt"}
    if shards is None:
        st.save_file(w, os.path.join(d, "model.safetensors"), meta)
        return
    n = len(shards)
    weight_map = {}
    for k, names in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{n:05d}.safetensors"
        st.save_file({x: w[x] for x in names}, os.path.join(d, fname), meta)
        weight_map.update({x: fname for x in names})
    total = sum(t.numel() * t.element_size() for t in w.values())
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total},
                   "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
        f.write("\n")


def reference(cfg, w, ids):
    """Float64 logits, loss and parameter gradients from the F32-stored weights."""
    params = {n: t.to(torch.float64).requires_grad_(not models.is_buffer(n)) for n, t in w.items()}
    logits = models.forward(cfg, params, ids)
    loss = models.lm_loss(logits, ids)
    names = [n for n in params if not models.is_buffer(n)]
    grads = torch.autograd.grad(loss, [params[n] for n in names])
    ref = {"input_ids": ids, "logits": logits.detach(), "loss": loss.detach()}
    ref.update({"grad." + n: g for n, g in zip(names, grads)})
    return ref


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    os.makedirs(args.out, exist_ok=True)
    for name, cfg, w, ids, shards in build_models():
        d = os.path.join(args.out, name)
        write_checkpoint(d, cfg, w, shards)
        # Reload from disk so the reference is computed from exactly what was written.
        cfg2, w2 = models.load_hf_dir(d)
        assert set(w2) == set(w) and all(torch.equal(w[n], w2[n]) for n in w)
        ref = reference(cfg2, w2, ids)
        st.save_file(ref, os.path.join(args.out, name + ".reference.safetensors"))
        lg = ref["logits"]
        print(f"{name}: model_type={cfg['model_type']} vocab={lg.shape[-1]} "
              f"params={sum(t.numel() for n, t in w.items() if not models.is_buffer(n))} "
              f"loss={ref['loss'].item():.6f} ln(V)={torch.log(torch.tensor(float(lg.shape[-1]))).item():.4f} "
              f"logit_std={lg.std().item():.3f} grads={len(ref) - 3}")


if __name__ == "__main__":
    main()
