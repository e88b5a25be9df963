#!/usr/bin/python3
"""Independent safetensors implementation (struct + json + numpy), following the format's spec.

Not the C++ code, not the `safetensors` package: a second reading of the spec, used to check
skillgraft's reader and writer in both directions.

  safetensors_py.py write OUT.safetensors OUT.json
      Writes a file with every dtype, odd shapes (scalar, zero-size, 3-D), deliberately unaligned
      data and __metadata__, plus the expected values as JSON:
      {"metadata": {...}, "tensors": [{"name", "dtype", "shape", "values"}, ...]} in data order;
      values are flat lists (row-major), BF16 given as raw uint16 bits, BOOL as 0/1.
  safetensors_py.py check FILE_OR_DIR EXPECT.json
      Reads FILE (written by skillgraft; or an HF sharded dir, through its index), validates it strictly against the spec and skillgraft's
      own promises (data section at a multiple of 8, every tensor aligned to its element size),
      and compares every tensor bit for bit and the metadata with EXPECT.json.
      Prints one line per problem; exits 1 if there is any.
"""
import json
import os
import struct
import sys

import numpy as np

# dtype -> (numpy dtype used to hold the raw little-endian values, element size)
DTYPES = {
    "F64": ("<f8", 8),
    "F32": ("<f4", 4),
    "F16": ("<f2", 2),
    "BF16": ("<u2", 2),  # numpy has no bfloat16: raw bits
    "I64": ("<i8", 8),
    "I32": ("<i4", 4),
    "I16": ("<i2", 2),
    "I8": ("i1", 1),
    "U8": ("u1", 1),
    "BOOL": ("u1", 1),
}
# Integer views used to compare floats bit for bit (so -0.0 != 0.0, NaN payloads count).
BIT_VIEWS = {"F64": "<u8", "F32": "<u4", "F16": "<u2"}


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def cases():
    """The tensors `write` produces, in data order: (name, dtype, shape, flat values)."""
    rng = np.random.default_rng(1234)
    f32_cube = rng.standard_normal(24).astype(np.float32)
    f64_mat = rng.standard_normal(6)
    f16_vals = np.array([0.0, -0.0, 1.0, -2.5, 65504.0, 6.103515625e-05, 0.333251953125],
                        dtype=np.float16)
    # bfloat16 bits: 1.0, -2.5, largest finite, smallest subnormal, -0.0
    bf16_bits = [0x3F80, 0xC020, 0x7F7F, 0x0001, 0x8000]
    return [
        # 3 bytes first: everything after starts unaligned, so the reader must copy.
        ("bytes.odd", "U8", [3], [0, 7, 255]),
        ("f64.matrix", "F64", [2, 3], [float(v) for v in f64_mat]),
        ("f32.scalar", "F32", [], [-1.5]),
        ("f32.cube", "F32", [2, 3, 4], [float(v) for v in f32_cube]),
        ("f32.empty", "F32", [0, 4], []),
        ("f32.negzero", "F32", [2], [-0.0, 0.0]),
        ("f16.vector", "F16", [7], [float(v) for v in f16_vals]),
        ("bf16.vector", "BF16", [5], bf16_bits),
        ("i64.extremes", "I64", [4], [-(2**63), 2**63 - 1, 0, -1]),
        ("i32.matrix", "I32", [2, 2], [-(2**31), 2**31 - 1, 5, -6]),
        ("i16.vector", "I16", [3], [-32768, 32767, 1]),
        ("i8.cube", "I8", [1, 1, 2], [-128, 127]),
        ("bool.mask", "BOOL", [5], [1, 0, 0, 1, 1]),
        ("u8.empty", "U8", [0], []),
        ("model.layers.0.mlp.up_proj.weight", "F32", [3, 1], [0.5, -0.25, 1e-3]),
    ]


METADATA = {"format": "pt", "note": "h\u00e9llo \"quoted\" \\ back", "empty": ""}


def encode(dtype, values):
    np_dtype, _ = DTYPES[dtype]
    return np.array(values, dtype=np_dtype).tobytes()


def write(out_path, expect_path):
    header = {"__metadata__": METADATA}
    data = b""
    expected = {"metadata": METADATA, "tensors": []}
    for name, dtype, shape, values in cases():
        assert len(values) == numel(shape), name
        raw = encode(dtype, values)
        assert len(raw) == numel(shape) * DTYPES[dtype][1]
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
        # Floats went through their own dtype already, so these doubles are exact.
        if dtype in BIT_VIEWS:
            values = [float(v) for v in np.array(values, dtype=DTYPES[dtype][0])]
        expected["tensors"].append({"name": name, "dtype": dtype, "shape": shape,
                                    "values": values})
    text = json.dumps(header, ensure_ascii=False).encode("utf-8")
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)  # the spec's recommended padding
    with open(out_path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        f.write(data)
    with open(expect_path, "w", encoding="utf-8") as f:
        json.dump(expected, f, indent=1)


def no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate key in header: %r" % keys)
    return dict(pairs)


def read(path, problems):
    """Parses and validates a file; returns (metadata, {name: (dtype, shape, begin, raw bytes)})."""
    raw = open(path, "rb").read()
    if len(raw) < 8:
        problems.append("file shorter than 8 bytes")
        return {}, {}
    (n,) = struct.unpack("<Q", raw[:8])
    if n > 100_000_000 or 8 + n > len(raw):
        problems.append("bad header length %d" % n)
        return {}, {}
    header_bytes = raw[8:8 + n]
    if header_bytes[:1] != b"{":
        problems.append("header does not start with '{'")
    if (8 + n) % 8 != 0:
        problems.append("data section starts at %d, not a multiple of 8" % (8 + n))
    text = header_bytes.decode("utf-8")
    padding = text[len(text.rstrip()):]
    if padding.strip(" "):
        problems.append("header padding %r is not only spaces" % padding)
    header = json.loads(text, object_pairs_hook=no_duplicate_keys)
    data = raw[8 + n:]
    metadata = header.pop("__metadata__", {})
    spans = sorted((tuple(v["data_offsets"]), k) for k, v in header.items())
    position = 0
    for (begin, end), name in spans:
        if begin != position or end < begin:
            problems.append("%s: span [%d, %d] does not start at %d" % (name, begin, end, position))
        position = end
    if position != len(data):
        problems.append("tensors cover %d of %d data bytes" % (position, len(data)))
    tensors = {}
    for name, info in header.items():
        if set(info) != {"dtype", "shape", "data_offsets"}:
            problems.append("%s: fields %s" % (name, sorted(info)))
        dtype, shape = info["dtype"], info["shape"]
        begin, end = info["data_offsets"]
        size = DTYPES[dtype][1]
        if end - begin != numel(shape) * size:
            problems.append("%s: %d bytes for shape %s %s" % (name, end - begin, shape, dtype))
        if end > begin and (8 + n + begin) % size != 0:
            problems.append("%s: %s data at file offset %d is not aligned" % (name, dtype, 8 + n + begin))
        tensors[name] = (dtype, shape, begin, data[begin:end])
    return metadata, tensors


def read_dir(path, problems):
    """An HF sharded checkpoint dir: the index, then every shard it names."""
    index = json.load(open(os.path.join(path, "model.safetensors.index.json"), encoding="utf-8"))
    weight_map = index["weight_map"]
    metadata, tensors = None, {}
    for shard in sorted(set(weight_map.values())):
        shard_metadata, shard_tensors = read(os.path.join(path, shard), problems)
        if metadata is not None and shard_metadata != metadata:
            problems.append("%s: metadata differs from the other shards" % shard)
        metadata = shard_metadata
        for name, tensor in shard_tensors.items():
            if name in tensors:
                problems.append("%s: in two shards" % name)
            if weight_map.get(name) != shard:
                problems.append("%s: in %s, index says %s" % (name, shard, weight_map.get(name)))
            tensors[name] = tensor
    for name in weight_map:
        if name not in tensors:
            problems.append("%s: in the index but in no shard" % name)
    total = sum(len(t[3]) for t in tensors.values())
    if index.get("metadata", {}).get("total_size") != total:
        problems.append("index total_size %r != %d" % (index.get("metadata"), total))
    return metadata or {}, tensors


def check(path, expect_path):
    problems = []
    expected = json.load(open(expect_path, encoding="utf-8"))
    metadata, tensors = (read_dir if os.path.isdir(path) else read)(path, problems)
    if metadata != expected["metadata"]:
        problems.append("metadata %r != expected %r" % (metadata, expected["metadata"]))
    expected_names = [t["name"] for t in expected["tensors"]]
    for name in sorted(set(tensors) - set(expected_names)):
        problems.append("%s: unexpected tensor" % name)
    for want in expected["tensors"]:
        name = want["name"]
        if name not in tensors:
            problems.append("%s: missing" % name)
            continue
        dtype, shape, _, raw = tensors[name]
        if dtype != want["dtype"] or shape != want["shape"]:
            problems.append("%s: %s %s, expected %s %s" % (name, dtype, shape, want["dtype"], want["shape"]))
            continue
        got = np.frombuffer(raw, dtype=DTYPES[dtype][0])
        ref = np.array(want["values"], dtype=DTYPES[dtype][0])
        if dtype == "BOOL" and not np.all(got <= 1):
            problems.append("%s: BOOL bytes other than 0/1" % name)
        if dtype in BIT_VIEWS:
            same = np.array_equal(got.view(BIT_VIEWS[dtype]), ref.view(BIT_VIEWS[dtype]))
        else:
            same = np.array_equal(got, ref)
        if not same:
            diff = np.abs(got.astype(np.float64) - ref.astype(np.float64)).max() if got.size else 0
            problems.append("%s: values differ (largest difference %g)" % (name, diff))
        else:
            print("ok %s %s %s" % (name, dtype, shape))
    for p in problems:
        print("MISMATCH " + p)
    return 1 if problems else 0


def main(argv):
    if len(argv) == 4 and argv[1] == "write":
        write(argv[2], argv[3])
        return 0
    if len(argv) == 4 and argv[1] == "check":
        return check(argv[2], argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
