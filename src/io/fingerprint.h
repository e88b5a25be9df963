// Fingerprints: a 64-bit hash over (name, dtype, shape, bytes) of every tensor of a StateDict, in
// order, as 16 hex digits. Identifies a base model so skills and checkpoints are never applied to
// another one. Not cryptographic.
#pragma once

#include <cstdint>
#include <string>

#include "io/state_dict.h"

namespace sg::io {

// Streams the bytes: hashing a model costs one pass over its memory and no copy for contiguous
// tensors.
std::string state_dict_fingerprint(const StateDict& tensors);

// The hash of one byte string, continuing from `seed` (8 bytes at a time, then a tail).
uint64_t hash_bytes(const void* data, size_t size, uint64_t seed);

}  // namespace sg::io
