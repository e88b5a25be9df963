#!/usr/bin/python3
"""Reference for the evaluator: a tiny random Llama over bytes, and what evaluation must give.

    /usr/bin/python3 tests/reference/eval_ref.py --out DIR

Writes DIR/model/ (config.json + model.safetensors; vocab 256, the byte tokenizer: id = byte, no
BOS/EOS), DIR/examples.json ({"generation": [...], "choice": [...]}, strings as byte lists so any
byte can appear) and DIR/expected.safetensors, all in float64 from the stored F32 weights:
  choice_scores F64 [N_c, K]  sum of log p(choice bytes | prompt bytes)
  choice_pred I64 [N_c], choice_confidence F64 [N_c], choice_accuracy/choice_loss/choice_ece F64 []
  greedy_tokens I64 [N_g, M] (greedy bytes after the stop rule, padded with -1)
  gen_correct I64 [N_g], gen_accuracy F64 [], gen_loss F64 []
The greedy rule: up to len(completion) + 4 bytes; stop after a byte that is '\\n' or the
completion's last byte (the completions here end in ASCII).
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pyref import models, st  # noqa: E402
from make_model_refs import Gen, llama_config, llama_weights, write_checkpoint  # noqa: E402

V = 256


def logprobs(cfg, w, ids):
    """ids: list of ints -> log-softmax over the next byte at each position, [T, V] float64."""
    logits = models.forward(cfg, w, torch.tensor([ids], dtype=torch.int64))[0]
    return torch.log_softmax(logits, dim=-1)


def sequence_log_likelihood(cfg, w, prompt, completion):
    ids = prompt + completion
    lp = logprobs(cfg, w, ids)
    return sum(lp[len(prompt) + i - 1, completion[i]].item() for i in range(len(completion)))


def greedy(cfg, w, prompt, steps, stop_byte):
    """Greedy bytes after `prompt` (full forward each step, no cache); returns (bytes, min top-2 margin)."""
    ids, out, margin = list(prompt), [], float("inf")
    for _ in range(steps):
        logits = models.forward(cfg, w, torch.tensor([ids], dtype=torch.int64))[0, -1]
        top = torch.topk(logits, 2).values
        margin = min(margin, (top[0] - top[1]).item())
        nxt = int(torch.argmax(logits))
        ids.append(nxt)
        out.append(nxt)
        if nxt == 10 or nxt == stop_byte:
            break
    return out, margin


def ece(conf, correct, bins=15):
    conf, correct = np.asarray(conf, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        sel = (conf >= lo) & ((conf < hi) if b < bins - 1 else (conf <= hi))
        if sel.any():
            total += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return total


def b(text):
    return list(text.encode())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    cfg = llama_config("LlamaForCausalLM", "llama", hidden_size=32, intermediate_size=64,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       vocab_size=V, rms_norm_eps=1e-5, rope_theta=10000.0,
                       tie_word_embeddings=False, max_position_embeddings=64)
    cfg["bos_token_id"], cfg["eos_token_id"] = None, None
    gen = Gen(7)
    w = llama_weights(cfg, gen, False, True)
    model_dir = os.path.join(args.out, "model")
    write_checkpoint(model_dir, cfg, w, None)
    cfg, w = models.load_hf_dir(model_dir)

    # Generation: equal and different prompt lengths. Some completions are the model's own greedy
    # bytes (so they are predicted correctly), the rest are answers it will not give.
    prompts = ["12 + 7 =", "40 + 2 =", "Reverse abc:", "Sort dcab:", "Hi", "99 + 1 =", "Reverse xyz:",
               "The opposite of big is"]
    generation = []
    for k, prompt in enumerate(prompts):
        if k % 2 == 0:
            own, _ = greedy(cfg, w, b(prompt), 12, -1)
            # Cut after the first ASCII byte at index >= 2 that is not '\n' and first occurs there.
            cut = next((i for i in range(2, len(own))
                        if own[i] < 128 and own[i] != 10 and own.index(own[i]) == i and 10 not in own[:i]), None)
            completion = own[:cut + 1] if cut is not None else b(" 19.")
        else:
            completion = b(" %d." % (k * 7))
        generation.append({"prompt": b(prompt), "completion": completion})

    gen_tokens, gen_correct, margins, nll, count = [], [], [], 0.0, 0
    for ex in generation:
        p, c = ex["prompt"], ex["completion"]
        out, margin = greedy(cfg, w, p, len(c) + 4, c[-1])
        gen_tokens.append(out)
        gen_correct.append(int(out == c))
        margins.append(margin)
        nll -= sequence_log_likelihood(cfg, w, p, c)
        count += len(c)
    # Float32 C++ must pick the same argmax as float64 here: keep clear of near-ties.
    assert min(margins) > 1e-3, f"greedy top-2 margin {min(margins):.2e} too small; pick another seed"
    M = max(len(t) for t in gen_tokens)
    greedy_tokens = torch.full((len(gen_tokens), M), -1, dtype=torch.int64)
    for i, t in enumerate(gen_tokens):
        greedy_tokens[i, :len(t)] = torch.tensor(t)

    choice_specs = [("Lily got a new puppy. She was", [" happy.", " sad."], 0),
                    ("Tom lost his ball. He was", [" happy.", " sad."], 1),
                    ("Text: Bonjour\nLanguage:", [" German.", " French.", " Spanish."], 1),
                    ("Text: Hola\nLanguage:", [" German.", " French.", " Spanish."], 2),
                    ("Is the sky blue?", [" yes", " no", " maybe so"], 0),
                    ("Pick one:", [" a", " bb", " ccc", " dddd"], 0)]
    choice = [{"prompt": b(p), "choices": [b(c) for c in cs], "label": lab} for p, cs, lab in choice_specs]
    K = max(len(ex["choices"]) for ex in choice)
    scores = torch.full((len(choice), K), float("nan"), dtype=torch.float64)
    preds, conf, correct, cnll, ccount = [], [], [], 0.0, 0
    for i, ex in enumerate(choice):
        s = [sequence_log_likelihood(cfg, w, ex["prompt"], c) for c in ex["choices"]]
        scores[i, :len(s)] = torch.tensor(s, dtype=torch.float64)
        pred = int(np.argmax(s))
        probs = np.exp(np.asarray(s) - max(s))
        probs /= probs.sum()
        preds.append(pred)
        conf.append(float(probs[pred]))
        correct.append(pred == ex["label"])
        cnll -= s[ex["label"]]
        ccount += len(ex["choices"][ex["label"]])

    f64 = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    expected = {
        "choice_scores": scores,
        "choice_pred": torch.tensor(preds, dtype=torch.int64),
        "choice_confidence": f64(conf),
        "choice_accuracy": f64(float(np.mean(correct))),
        "choice_loss": f64(cnll / ccount),
        "choice_ece": f64(ece(conf, correct)),
        "greedy_tokens": greedy_tokens,
        "gen_correct": torch.tensor(gen_correct, dtype=torch.int64),
        "gen_accuracy": f64(float(np.mean(gen_correct))),
        "gen_loss": f64(nll / count),
    }
    st.save_file(expected, os.path.join(args.out, "expected.safetensors"))
    with open(os.path.join(args.out, "examples.json"), "w") as f:
        json.dump({"generation": generation, "choice": choice}, f)
    print(f"generation: {sum(gen_correct)}/{len(gen_correct)} correct, loss {nll / count:.4f}, "
          f"smallest greedy top-2 logit margin {min(margins):.2e}")
    print(f"choice: predictions {preds}, accuracy {np.mean(correct):.3f}, loss {cnll / ccount:.4f}, "
          f"ece {ece(conf, correct):.4f}")


if __name__ == "__main__":
    main()
