"""HF-semantics reference models as plain functions over a dict of tensors, in float64.

forward(cfg, w, input_ids) -> logits [B, T, V] (float64); cfg is a parsed config.json,
w maps HF parameter names to tensors (any float dtype; cast to float64 inside, so
float64 leaves with requires_grad get gradients through torch.autograd).
"""
import json
import math
import os

import torch

from . import st

LLAMA_TYPES = ("llama", "mistral", "qwen2")
F64 = torch.float64


def _f(t):
    return t.to(F64)


def _linear(x, w, name):
    """HF nn.Linear: y = x @ W^T (+ b); W is [out, in]; bias used if present in w."""
    y = x @ _f(w[name + ".weight"]).t()
    if name + ".bias" in w:
        y = y + _f(w[name + ".bias"])
    return y


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * _f(weight)


def layer_norm(x, weight, bias, eps):
    mu = x.mean(-1, keepdim=True)
    var = (x - mu).pow(2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * _f(weight) + _f(bias)


def _rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope_cos_sin(positions, head_dim, theta):
    """HF rotate_half convention: frequencies repeated as cat(freqs, freqs)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=F64) / head_dim))
    freqs = torch.outer(positions.to(F64), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x, cos, sin):
    # x: [B, H, T, D]; cos/sin: [T, D]
    return x * cos + _rotate_half(x) * sin


def causal_attention(q, k, v):
    """q: [B, H, T, D], k/v: [B, H, S, D] with S == T (no cache). Causal softmax attention."""
    T, S = q.shape[-2], k.shape[-2]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    mask = torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def llama_head_dim(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def llama_forward(cfg, w, input_ids):
    B, T = input_ids.shape
    H = cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads") or H
    D = llama_head_dim(cfg)
    eps = cfg.get("rms_norm_eps", 1e-6)
    cos, sin = rope_cos_sin(torch.arange(T), D, cfg.get("rope_theta", 10000.0))
    emb = w["model.embed_tokens.weight"]
    x = _f(emb)[input_ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = _linear(h, w, p + "self_attn.q_proj").view(B, T, H, D).transpose(1, 2)
        k = _linear(h, w, p + "self_attn.k_proj").view(B, T, KV, D).transpose(1, 2)
        v = _linear(h, w, p + "self_attn.v_proj").view(B, T, KV, D).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # GQA: q head h uses kv head h // (H // KV)
        idx = torch.arange(H) // (H // KV)
        a = causal_attention(q, k[:, idx], v[:, idx])
        a = a.transpose(1, 2).reshape(B, T, H * D)
        x = x + _linear(a, w, p + "self_attn.o_proj")
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        g = _linear(h, w, p + "mlp.gate_proj")
        u = _linear(h, w, p + "mlp.up_proj")
        x = x + _linear(torch.nn.functional.silu(g) * u, w, p + "mlp.down_proj")
    x = rms_norm(x, w["model.norm.weight"], eps)
    tied = cfg.get("tie_word_embeddings", False) or "lm_head.weight" not in w
    head = emb if tied else w["lm_head.weight"]
    return x @ _f(head).t()


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def _conv1d(x, w, name):
    """HF Conv1D: weight stored [in, out]; y = x @ W + b."""
    return x @ _f(w[name + ".weight"]) + _f(w[name + ".bias"])


def gpt2_prefix(w):
    return "transformer." if "transformer.wte.weight" in w else ""


def gpt2_forward(cfg, w, input_ids):
    B, T = input_ids.shape
    P = gpt2_prefix(w)
    C = cfg["n_embd"]
    H = cfg["n_head"]
    D = C // H
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    wte = w[P + "wte.weight"]
    x = _f(wte)[input_ids] + _f(w[P + "wpe.weight"])[torch.arange(T)]
    for i in range(cfg["n_layer"]):
        p = f"{P}h.{i}."
        h = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        qkv = _conv1d(h, w, p + "attn.c_attn")
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in qkv.split(C, dim=-1))
        a = causal_attention(q, k, v).transpose(1, 2).reshape(B, T, C)
        x = x + _conv1d(a, w, p + "attn.c_proj")
        h = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        x = x + _conv1d(gelu_new(_conv1d(h, w, p + "mlp.c_fc")), w, p + "mlp.c_proj")
    x = layer_norm(x, w[P + "ln_f.weight"], w[P + "ln_f.bias"], eps)
    return x @ _f(wte).t()  # lm_head tied to wte


def is_gpt2(cfg):
    return cfg.get("model_type") == "gpt2"


def forward(cfg, w, input_ids):
    if is_gpt2(cfg):
        return gpt2_forward(cfg, w, input_ids)
    if cfg.get("model_type") in LLAMA_TYPES:
        return llama_forward(cfg, w, input_ids)
    raise ValueError(f"unsupported model_type {cfg.get('model_type')!r}")


def lm_loss(logits, input_ids):
    """Mean cross-entropy of logits[:, :-1] predicting input_ids[:, 1:]."""
    V = logits.shape[-1]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, V), input_ids[:, 1:].reshape(-1))


def is_buffer(name):
    """Non-parameter tensors found in some checkpoints (GPT-2 attention mask buffers)."""
    return name.endswith(".attn.bias") or name.endswith(".attn.masked_bias")


def load_hf_dir(path):
    """-> (config dict, {name: tensor}) from config.json and model.safetensors
    or the shards listed in model.safetensors.index.json."""
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    single = os.path.join(path, "model.safetensors")
    index = os.path.join(path, "model.safetensors.index.json")
    w = {}
    if os.path.exists(single):
        w = st.load_file(single)
    elif os.path.exists(index):
        with open(index) as f:
            wmap = json.load(f)["weight_map"]
        for shard in sorted(set(wmap.values())):
            part = st.load_file(os.path.join(path, shard))
            for name, t in part.items():
                if wmap.get(name) == shard:
                    w[name] = t
        missing = set(wmap) - set(w)
        if missing:
            raise ValueError(f"{path}: tensors in index but not in shards: {sorted(missing)[:5]}")
    else:
        raise FileNotFoundError(f"{path}: no model.safetensors or model.safetensors.index.json")
    return cfg, w
