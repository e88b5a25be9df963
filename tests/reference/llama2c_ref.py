#!/usr/bin/python3
"""Independent NumPy reference for llama2.c checkpoints: greedy decoding exactly as run.c does it.

    /usr/bin/python3 tests/reference/llama2c_ref.py --model data/models/stories260K.bin \
        [--tokenizer data/models/tok512.bin] --steps 120 --out FILE.safetensors

Writes tokens I64 [steps+1] (BOS first) and logits F64 [steps, vocab], where logits[t] are
computed after feeding tokens[t]. Computes in float64. Uses pyref.st only to write the output.
"""
import argparse
import os
import struct
import sys

import numpy as np

BOS = 1


def read_checkpoint(path):
    """-> (config dict, weights dict of float64 arrays) from a llama2.c .bin (legacy v0 format)."""
    with open(path, "rb") as f:
        raw = f.read()
    dim, hidden, L, H, KV, vocab, seq_len = struct.unpack("<7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    hs = dim // H
    kv_dim = KV * hs
    data = np.frombuffer(raw, dtype="<f4", offset=28)
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        if pos + n > data.size:
            raise ValueError(f"{path}: truncated checkpoint")
        a = data[pos:pos + n].astype(np.float64).reshape(shape)
        pos += n
        return a

    w = {"tok": take(vocab, dim), "rms_att": take(L, dim),
         "wq": take(L, dim, dim),          # row-major [out=dim, in=dim]
         "wk": take(L, kv_dim, dim), "wv": take(L, kv_dim, dim),
         "wo": take(L, dim, dim), "rms_ffn": take(L, dim),
         "w1": take(L, hidden, dim), "w2": take(L, dim, hidden), "w3": take(L, hidden, dim),
         "rms_final": take(dim)}
    take(seq_len, hs // 2)  # freq_cis_real (unused)
    take(seq_len, hs // 2)  # freq_cis_imag (unused)
    w["wcls"] = w["tok"] if shared else take(vocab, dim)
    if pos != data.size:
        raise ValueError(f"{path}: {data.size - pos} trailing floats")
    cfg = dict(dim=dim, hidden_dim=hidden, n_layers=L, n_heads=H, n_kv_heads=KV,
               vocab_size=vocab, seq_len=seq_len, shared=shared)
    return cfg, w


def rmsnorm(x, w):
    return w * (x / np.sqrt(np.mean(x * x) + 1e-5))


def rope_interleaved(vec, pos, head_size, n):
    """Rotate pairs (i, i+1) for even i < n, freq = 1 / 10000^((i % head_size) / head_size)."""
    i = np.arange(0, n, 2)
    freq = 1.0 / np.power(10000.0, (i % head_size) / head_size)
    c, s = np.cos(pos * freq), np.sin(pos * freq)
    v0, v1 = vec[i].copy(), vec[i + 1].copy()
    vec[i] = v0 * c - v1 * s
    vec[i + 1] = v0 * s + v1 * c


class Llama2c:
    def __init__(self, cfg, w):
        self.c, self.w = cfg, w
        L, S = cfg["n_layers"], cfg["seq_len"]
        self.hs = cfg["dim"] // cfg["n_heads"]
        self.kv_dim = cfg["n_kv_heads"] * self.hs
        self.k_cache = np.zeros((L, S, self.kv_dim))
        self.v_cache = np.zeros((L, S, self.kv_dim))

    def forward(self, token, pos):
        c, w, hs = self.c, self.w, self.hs
        H, kv_mul = c["n_heads"], c["n_heads"] // c["n_kv_heads"]
        x = w["tok"][token].copy()
        for l in range(c["n_layers"]):
            xb = rmsnorm(x, w["rms_att"][l])
            q = w["wq"][l] @ xb
            k = w["wk"][l] @ xb
            v = w["wv"][l] @ xb
            rope_interleaved(q, pos, hs, c["dim"])
            rope_interleaved(k, pos, hs, self.kv_dim)
            self.k_cache[l, pos] = k
            self.v_cache[l, pos] = v
            out = np.empty(c["dim"])
            for h in range(H):
                kh = (h // kv_mul) * hs
                qh = q[h * hs:(h + 1) * hs]
                keys = self.k_cache[l, :pos + 1, kh:kh + hs]
                att = keys @ qh / np.sqrt(hs)
                att = np.exp(att - att.max())
                att /= att.sum()
                out[h * hs:(h + 1) * hs] = att @ self.v_cache[l, :pos + 1, kh:kh + hs]
            x = x + w["wo"][l] @ out
            xb = rmsnorm(x, w["rms_ffn"][l])
            h1 = w["w1"][l] @ xb
            h3 = w["w3"][l] @ xb
            x = x + w["w2"][l] @ (h1 / (1.0 + np.exp(-h1)) * h3)
        x = rmsnorm(x, w["rms_final"])
        return w["wcls"] @ x


def read_tokenizer(path, vocab_size):
    pieces = []
    with open(path, "rb") as f:
        (max_len,) = struct.unpack("<i", f.read(4))
        for _ in range(vocab_size):
            _score, n = struct.unpack("<fi", f.read(8))
            pieces.append(f.read(n))
    return pieces


def decode(pieces, tokens):
    """run.c's decode: strip the leading space after BOS, <0xNN> pieces are raw bytes."""
    out = b""
    for prev, tok in zip(tokens[:-1], tokens[1:]):
        p = pieces[tok]
        if prev == BOS and p.startswith(b" "):
            p = p[1:]
        if len(p) == 6 and p.startswith(b"<0x") and p.endswith(b">"):
            p = bytes([int(p[3:5], 16)])
        out += p
    return out.decode("utf-8", errors="replace")


def greedy(cfg, w, steps):
    m = Llama2c(cfg, w)
    if steps > cfg["seq_len"]:
        raise ValueError(f"--steps {steps} exceeds seq_len {cfg['seq_len']}")
    tokens, logits = [BOS], []
    for pos in range(steps):
        lg = m.forward(tokens[-1], pos)
        logits.append(lg)
        tokens.append(int(np.argmax(lg)))
    return np.array(tokens, dtype=np.int64), np.stack(logits)


def main():
    ap = argparse.ArgumentParser(description="NumPy llama2.c reference (greedy decoding)")
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokenizer")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--out")
    a = ap.parse_args()
    cfg, w = read_checkpoint(a.model)
    tokens, logits = greedy(cfg, w, a.steps)
    print("config:", cfg)
    print("tokens:", " ".join(map(str, tokens.tolist())))
    if a.tokenizer:
        print("text:", decode(read_tokenizer(a.tokenizer, cfg["vocab_size"]), tokens.tolist()))
    if a.out:
        import torch
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from pyref import st
        st.save_file({"tokens": torch.from_numpy(tokens), "logits": torch.from_numpy(logits)}, a.out)
        print("wrote", a.out)


if __name__ == "__main__":
    main()
