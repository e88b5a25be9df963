#include "io/fingerprint.h"

#include <torch/torch.h>

#include <cstdio>
#include <cstring>

#include "io/safetensors.h"

namespace sg::io {

namespace {

constexpr uint64_t kPrime = 0x100000001b3ULL;
constexpr uint64_t kOffset = 0xcbf29ce484222325ULL;

uint64_t mix(uint64_t h, uint64_t word) {
  h ^= word;
  h *= kPrime;
  return h ^ (h >> 29);
}

}  // namespace

uint64_t hash_bytes(const void* data, size_t size, uint64_t seed) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  uint64_t h = mix(seed, size);
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    uint64_t word;
    std::memcpy(&word, bytes + i, 8);
    h = mix(h, word);
  }
  uint64_t tail = 0;
  if (size > i) std::memcpy(&tail, bytes + i, size - i);
  return mix(h, tail);
}

std::string state_dict_fingerprint(const StateDict& tensors) {
  uint64_t h = kOffset;
  for (const auto& item : tensors) {
    const at::Tensor tensor = item.value().contiguous();
    h = hash_bytes(item.key().data(), item.key().size(), h);
    const std::string dtype = safetensors_dtype_name(tensor.scalar_type());
    h = hash_bytes(dtype.data(), dtype.size(), h);
    for (int64_t dim : tensor.sizes()) h = mix(h, static_cast<uint64_t>(dim));
    h = hash_bytes(tensor.data_ptr(), tensor.numel() * tensor.element_size(), h);
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

}  // namespace sg::io
