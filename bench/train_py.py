#!/usr/bin/python3
"""Python PyTorch baseline for the fine-tuning throughput benchmark: the same training as
bench/bench_train (which writes DIR with --dump DIR), written the way a competent user would:
the Llama of bench/forward_py.py, torch.optim.SGD(momentum=0.9), clip_grad_norm_(1.0),
loss = cross-entropy sum over completion targets (ignore -100) / target count.

    /usr/bin/python3 bench/train_py.py --data DIR [--steps 10] [--warmup 3] [--reps 3]
        [--lr 0.05] [--threads N] [--phases]

DIR holds initial/ (an HF model directory: the C++ run's initial weights) and
batches.safetensors ("tokens": (steps, B, seq + 1) int64, in the order train::train consumes
them; the completion is every token after the first). Like the C++ run: a warmup run of --warmup
steps from the initial weights (its losses are printed, for the agreement check), then --reps
runs of --steps steps, each with a fresh optimizer and a constant learning rate; each run's rate
is non-padding tokens / the summed wall time of its steps. Prints one JSON line with the median.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "reference"))
import forward_py  # noqa: E402
from pyref import st  # noqa: E402

IGNORE = -100
COMPLETION_START = 1


def make_batch(seqs):
    """seqs: (B, T + 1) -> inputs (B, T), targets (B, T) with -100 before the completion, count."""
    inputs, targets = seqs[:, :-1], seqs[:, 1:].clone()
    targets[:, :COMPLETION_START - 1] = IGNORE
    return inputs, targets, int((targets != IGNORE).sum())


def train(m, params, tokens, steps, lr, vocab):
    """steps SGD steps over tokens[0], tokens[1], ... -> (losses, tokens per second)."""
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    losses, seconds, n_tok = [], 0.0, 0
    for s in range(steps):
        t0 = time.perf_counter()
        inputs, targets, count = make_batch(tokens[s % tokens.shape[0]])
        opt.zero_grad()
        logits = m(inputs)  # (B, T) -> (B, T, V)
        loss = nn.functional.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1),
                                           ignore_index=IGNORE, reduction="sum")
        losses.append(loss.item() / count)
        (loss / count).backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        seconds += time.perf_counter() - t0
        n_tok += inputs.numel()
    return losses, n_tok / seconds


def phases(m, params, tokens, steps, warmup, lr, vocab):
    """One step taken apart, each phase timed (median over steps, after warmup) -> {phase: s}."""
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    names = ("make_batch", "forward", "loss", "backward", "clip_grad_norm", "optimizer_step", "zero_grad")
    times = {n: [] for n in names}
    for s in range(warmup + steps):
        marks = [time.perf_counter()]
        inputs, targets, count = make_batch(tokens[s % tokens.shape[0]])
        marks.append(time.perf_counter())
        logits = m(inputs)
        marks.append(time.perf_counter())
        loss = nn.functional.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1),
                                           ignore_index=IGNORE, reduction="sum")
        loss.item()
        marks.append(time.perf_counter())
        (loss / count).backward()
        marks.append(time.perf_counter())
        nn.utils.clip_grad_norm_(params, 1.0)
        marks.append(time.perf_counter())
        opt.step()
        marks.append(time.perf_counter())
        opt.zero_grad()
        marks.append(time.perf_counter())
        if s >= warmup:
            for k, n in enumerate(names):
                times[n].append(marks[k + 1] - marks[k])
    return {n: statistics.median(v) for n, v in times.items()}


def main():
    ap = argparse.ArgumentParser(description="Python PyTorch Llama training-throughput baseline")
    ap.add_argument("--data", required=True, help="directory written by bench_train --dump")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--phases", action="store_true", help="time each phase of a step instead")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    m, c = forward_py.build(argparse.Namespace(model=os.path.join(args.data, "initial"), llama2c=None, config=None))
    m.train()
    params = list(m.parameters())  # tied weights once
    tokens = st.load_file(os.path.join(args.data, "batches.safetensors"))["tokens"]
    if tokens.shape[0] < args.steps:
        raise SystemExit(f"train_py: {tokens.shape[0]} batches written, --steps {args.steps} needs more")
    V = c["vocab_size"]
    if args.phases:
        print(json.dumps({"impl": "python", "mode": "phases",
                          **phases(m, params, tokens, args.steps, args.warmup, args.lr, V)}))
        return
    warm_losses, _ = train(m, params, tokens, args.warmup, args.lr, V)
    rates = [train(m, params, tokens, args.steps, args.lr, V)[1] for _ in range(args.reps)]
    print(json.dumps({"impl": "python", "mode": "train", "tokens_per_s": statistics.median(rates),
                      "params": sum(p.numel() for p in params), "batch": tokens.shape[1],
                      "seq": tokens.shape[2] - 1, "steps": args.steps, "threads": args.threads,
                      "torch": torch.__version__, "losses": warm_losses}))


if __name__ == "__main__":
    main()
