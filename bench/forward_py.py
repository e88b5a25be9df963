#!/usr/bin/python3
"""Python PyTorch baseline for the forward-throughput benchmark: a float32 Llama written the
way a competent user would (HF modeling_llama style: nn.Linear, rotate_half RoPE, repeat_kv GQA,
preallocated KV cache, inference_mode).

    /usr/bin/python3 bench/forward_py.py (--model HF_DIR | --llama2c FILE.bin | --config JSON)
        --mode prefill --batch 8 --seq 256 | --mode decode --tokens 256 | --mode greedy --tokens 20
        [--iters 5] [--warmup 1] [--threads N]

Prints one JSON line: {"mode", "tokens_per_s", "seconds" (median wall time of one repetition),
"params", ...}. Mode greedy prints the greedy tokens from BOS (1) instead (for checking).
"""
import argparse
import json
import math
import os
import statistics
import struct
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))

DEFAULTS = dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                num_attention_heads=8, num_key_value_heads=None, vocab_size=32000,
                rms_norm_eps=1e-5, rope_theta=10000.0, head_dim=None,
                max_position_embeddings=2048, tie_word_embeddings=False, attention_bias=False)


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def repeat_kv(x, n_rep):
    if n_rep == 1:
        return x
    b, kv, s, d = x.shape
    return x[:, :, None].expand(b, kv, n_rep, s, d).reshape(b, kv * n_rep, s, d)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.h, self.kv, self.d = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        C, bias = c["hidden_size"], c["attention_bias"]
        self.q_proj = nn.Linear(C, self.h * self.d, bias=bias)
        self.k_proj = nn.Linear(C, self.kv * self.d, bias=bias)
        self.v_proj = nn.Linear(C, self.kv * self.d, bias=bias)
        self.o_proj = nn.Linear(self.h * self.d, C, bias=False)
        self.scale = 1.0 / math.sqrt(self.d)

    def forward(self, x, cos, sin, mask, cache, pos):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.h, self.d).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.kv, self.d).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.kv, self.d).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:  # preallocated [B, KV, max_len, D] buffers
            kc, vc = cache
            kc[:B, :, pos:pos + T] = k
            vc[:B, :, pos:pos + T] = v
            k, v = kc[:B, :, :pos + T], vc[:B, :, :pos + T]
        k, v = repeat_kv(k, self.h // self.kv), repeat_kv(v, self.h // self.kv)
        s = torch.matmul(q, k.transpose(2, 3)) * self.scale
        if mask is not None:
            s = s + mask
        a = torch.matmul(torch.softmax(s, dim=-1), v)
        return self.o_proj(a.transpose(1, 2).reshape(B, T, self.h * self.d))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        C, I = c["hidden_size"], c["intermediate_size"]
        self.gate_proj = nn.Linear(C, I, bias=False)
        self.up_proj = nn.Linear(C, I, bias=False)
        self.down_proj = nn.Linear(I, C, bias=False)

    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.mlp = MLP(c)

    def forward(self, x, cos, sin, mask, cache, pos):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, pos)
        return x + self.mlp(self.post_attention_layernorm(x))


class Inner(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class LlamaForCausalLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = Inner(c)
        self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)
        if c["tie_word_embeddings"]:
            self.lm_head.weight = self.model.embed_tokens.weight
        d, n = c["head_dim"], c["max_position_embeddings"]
        inv_freq = 1.0 / (c["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
        emb = torch.cat([torch.outer(torch.arange(n, dtype=torch.float32), inv_freq)] * 2, dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)
        self.register_buffer("mask", torch.full((n, n), float("-inf")).triu(1), persistent=False)
        self.cache = None

    def alloc_cache(self, batch, max_len=None):
        c = self.c
        n = max_len or c["max_position_embeddings"]
        shape = (batch, c["num_key_value_heads"], n, c["head_dim"])
        self.cache = [(torch.zeros(shape), torch.zeros(shape)) for _ in self.model.layers]

    def forward(self, ids, pos=0, use_cache=False):
        T = ids.shape[1]
        cos, sin = self.cos[pos:pos + T], self.sin[pos:pos + T]
        mask = self.mask[pos:pos + T, :pos + T] if T > 1 else None
        x = self.model.embed_tokens(ids)
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, mask, self.cache[i] if use_cache else None, pos)
        return self.lm_head(self.model.norm(x))


def full_config(user):
    c = dict(DEFAULTS)
    c.update({k: v for k, v in user.items() if v is not None or k not in c})
    c["num_key_value_heads"] = c["num_key_value_heads"] or c["num_attention_heads"]
    c["head_dim"] = c["head_dim"] or c["hidden_size"] // c["num_attention_heads"]
    c["attention_bias"] = bool(c.get("attention_bias")) or c.get("model_type") == "qwen2"
    return c


def load_weights(m, w):
    """Copy {HF name: tensor} into the module (tied => lm_head is embed_tokens, as in HF)."""
    state = m.state_dict()
    if m.c["tie_word_embeddings"]:
        w = dict(w, **{"lm_head.weight": w["model.embed_tokens.weight"]})
    missing = set(state) - set(w)
    if missing:
        raise ValueError(f"missing weights: {sorted(missing)[:5]}")
    m.load_state_dict({n: w[n].to(torch.float32) for n in state})


def read_llama2c(path):
    """llama2.c .bin -> (HF config, HF-named weights), q/k rows permuted per head from
    interleaved-pair RoPE to rotate_half RoPE: [even rows..., odd rows...]."""
    with open(path, "rb") as f:
        raw = f.read()
    dim, hidden, L, H, KV, vocab, seq_len = struct.unpack("<7i", raw[:28])
    shared, vocab, hs = vocab > 0, abs(vocab), dim // H
    data = torch.from_numpy(np.frombuffer(raw, dtype="<f4", offset=28).astype(np.float32))
    off = 0

    def take(*shape):
        nonlocal off
        n = int(np.prod(shape))
        t = data[off:off + n].view(*shape)
        off += n
        return t

    def perm(wt, heads):  # wt: [heads*hs, dim]
        return wt.view(heads, hs // 2, 2, dim).transpose(1, 2).reshape(heads * hs, dim)

    tok, rms_att = take(vocab, dim), take(L, dim)
    wq, wk, wv, wo = take(L, dim, dim), take(L, KV * hs, dim), take(L, KV * hs, dim), take(L, dim, dim)
    rms_ffn, w1, w2, w3 = take(L, dim), take(L, hidden, dim), take(L, dim, hidden), take(L, hidden, dim)
    rms_final = take(dim)
    take(seq_len * hs)  # freq_cis_real + freq_cis_imag
    w = {"model.embed_tokens.weight": tok, "model.norm.weight": rms_final}
    if not shared:
        w["lm_head.weight"] = take(vocab, dim)
    for l in range(L):
        p = f"model.layers.{l}."
        w.update({p + "input_layernorm.weight": rms_att[l], p + "post_attention_layernorm.weight": rms_ffn[l],
                  p + "self_attn.q_proj.weight": perm(wq[l], H), p + "self_attn.k_proj.weight": perm(wk[l], KV),
                  p + "self_attn.v_proj.weight": wv[l], p + "self_attn.o_proj.weight": wo[l],
                  p + "mlp.gate_proj.weight": w1[l], p + "mlp.down_proj.weight": w2[l],
                  p + "mlp.up_proj.weight": w3[l]})
    cfg = dict(model_type="llama", hidden_size=dim, intermediate_size=hidden, num_hidden_layers=L,
               num_attention_heads=H, num_key_value_heads=KV, vocab_size=vocab, rms_norm_eps=1e-5,
               rope_theta=10000.0, max_position_embeddings=seq_len, tie_word_embeddings=shared)
    return cfg, w


def build(args):
    if args.model:
        from pyref import models
        cfg, w = models.load_hf_dir(args.model)
        if cfg.get("model_type") not in models.LLAMA_TYPES:
            raise SystemExit(f"forward_py: Llama-family models only, not {cfg.get('model_type')}")
        cfg["attention_bias"] = cfg.get("attention_bias") or "model.layers.0.self_attn.q_proj.bias" in w
    elif args.llama2c:
        cfg, w = read_llama2c(args.llama2c)
    else:
        cfg, w = json.loads(args.config or "{}"), None
    if w is not None and "lm_head.weight" not in w:
        cfg["tie_word_embeddings"] = True
    c = full_config(cfg)
    torch.manual_seed(0)
    m = LlamaForCausalLM(c)
    if w is not None:
        load_weights(m, w)
    else:
        for n, p in m.named_parameters():
            if not n.endswith("layernorm.weight") and n != "model.norm.weight":
                nn.init.normal_(p, std=0.02)
    return m.eval(), c


def main():
    ap = argparse.ArgumentParser(description="Python PyTorch Llama forward-throughput baseline")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--model", help="HF Llama-family checkpoint directory")
    src.add_argument("--llama2c", help="llama2.c .bin checkpoint")
    src.add_argument("--config", help="JSON config for random weights")
    ap.add_argument("--mode", choices=("prefill", "decode", "greedy"), default="prefill")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    m, c = build(args)
    params = sum(p.numel() for p in m.parameters())  # tied weights counted once
    V = c["vocab_size"]

    with torch.inference_mode():
        if args.mode == "prefill":
            n_tok = args.batch * args.seq
            ids = torch.randint(0, V, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))

            def run():
                return m(ids)
        else:
            n_tok = args.tokens
            if n_tok > c["max_position_embeddings"]:
                raise SystemExit("forward_py: --tokens exceeds max_position_embeddings")
            m.alloc_cache(1, n_tok)

            def run():  # greedy decoding from BOS, empty cache, logits every step
                tok, out = torch.tensor([[1]]), [1]
                for pos in range(n_tok):
                    logits = m(tok, pos, use_cache=True)
                    tok = logits[:, -1].argmax(-1, keepdim=True)
                    out.append(int(tok))
                return out

        if args.mode == "greedy":
            print(json.dumps({"mode": "greedy", "tokens": run()}))
            return
        for _ in range(args.warmup):
            run()
        times = []
        for _ in range(args.iters):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    rec = {"mode": args.mode, "tokens_per_s": n_tok / sec, "seconds": sec, "params": params,
           "tokens": n_tok, "iters": args.iters, "threads": args.threads, "torch": torch.__version__}
    if args.mode == "prefill":
        rec.update(batch=args.batch, seq=args.seq)
    print(json.dumps(rec))


if __name__ == "__main__":
    main()
