#!/usr/bin/env python3
"""Independent reference for skillgraft's SentencePiece-style BPE encoder (llama2.c run.c's algorithm).

Usage: sp_tokenizer_ref.py TOKENIZER_BIN VOCAB_SIZE INPUT OUTPUT
INPUT holds one string per line, hex-encoded (so that any bytes, newlines included, fit);
OUTPUT gets one JSON list of ids per line.

The algorithm, written plainly (quadratic, like run.c's encode):
  1. a non-empty text gets a dummy-prefix space in front;
  2. it is split into code points; each is looked up as a piece; a code point that is not a
     piece, and every byte of ill-formed UTF-8, becomes the byte-fallback pieces <0xNN>
     (looked up by name);
  3. repeatedly, the adjacent pair whose concatenation is a piece with the highest score is
     merged (leftmost on ties), until no pair concatenates to a piece.
Like SentencePiece, control pieces (<unk>=0, BOS=1, EOS=2) and byte pieces never come from text:
they take part in no lookup, and a byte-fallback symbol never merges.
Ill-formed UTF-8 is found by Python's own strict decoder ('surrogateescape' turns each such byte
into one lone surrogate U+DC80..U+DCFF).
"""
import json
import struct
import sys

UNK, BOS, EOS = 0, 1, 2


def read_tokenizer(path, vocab_size):
    with open(path, "rb") as f:
        data = f.read()
    (max_len,) = struct.unpack_from("<i", data, 0)
    offset = 4
    pieces, scores = [], []
    for _ in range(vocab_size):
        score, n = struct.unpack_from("<fi", data, offset)
        offset += 8
        pieces.append(data[offset:offset + n])
        scores.append(score)
        offset += n
    assert offset == len(data), "trailing data"
    return pieces, scores


def encode(text, pieces, scores):
    byte_ids = {}
    lookup = {}
    for i, p in enumerate(pieces):
        if i in (UNK, BOS, EOS):
            continue
        if len(p) == 6 and p.startswith(b"<0x") and p.endswith(b">"):
            byte_ids.setdefault(int(p[3:5], 16), i)
            continue
        lookup.setdefault(p, i)
    if not text:
        return []
    chars = (b" " + text).decode("utf-8", errors="surrogateescape")
    # symbols: (bytes, id, mergeable)
    symbols = []
    for ch in chars:
        if 0xDC80 <= ord(ch) <= 0xDCFF:
            symbols.append((None, byte_ids[ord(ch) - 0xDC00], False))
            continue
        b = ch.encode("utf-8")
        if b in lookup:
            symbols.append((b, lookup[b], True))
        else:
            symbols.extend((None, byte_ids[x], False) for x in b)
    while True:
        best = None
        for i in range(len(symbols) - 1):
            (a, _, ma), (c, _, mc) = symbols[i], symbols[i + 1]
            if not (ma and mc):
                continue
            merged = lookup.get(a + c)
            if merged is not None and (best is None or scores[merged] > scores[best[1]]):
                best = (i, merged)
        if best is None:
            break
        i, merged = best
        symbols[i:i + 2] = [(symbols[i][0] + symbols[i + 1][0], merged, True)]
    return [s[1] for s in symbols]


def main():
    tokenizer_bin, vocab_size, input_path, output_path = sys.argv[1:5]
    pieces, scores = read_tokenizer(tokenizer_bin, int(vocab_size))
    with open(input_path) as f:
        texts = [bytes.fromhex(line.rstrip("\n")) for line in f]
    with open(output_path, "w") as out:
        for text in texts:
            out.write(json.dumps(encode(text, pieces, scores)) + "\n")


if __name__ == "__main__":
    main()
