#include "io/safetensors.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <set>

#include "util/error.h"
#include "util/file.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors data is little-endian and this code does not byte-swap");

namespace sg::io {

namespace {

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;

constexpr char kMetadataKey[] = "__metadata__";
constexpr char kSingleFileName[] = "model.safetensors";
constexpr char kIndexFileName[] = "model.safetensors.index.json";
// A valid header nests three levels (header -> entry -> shape); anything far deeper is hostile and
// would otherwise make the parser build a huge stack.
constexpr int kMaxHeaderDepth = 16;

struct DtypeInfo {
  const char* name;
  at::ScalarType type;
  uint64_t size;
};

constexpr DtypeInfo kDtypes[] = {
    {"F64", at::kDouble, 8}, {"F32", at::kFloat, 4}, {"F16", at::kHalf, 2},
    {"BF16", at::kBFloat16, 2}, {"I64", at::kLong, 8}, {"I32", at::kInt, 4},
    {"I16", at::kShort, 2}, {"I8", at::kChar, 1}, {"U8", at::kByte, 1},
    {"BOOL", at::kBool, 1},
};
constexpr char kDtypeList[] = "F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL";

const DtypeInfo* find_dtype(const std::string& name) {
  for (const DtypeInfo& info : kDtypes) {
    if (name == info.name) return &info;
  }
  return nullptr;
}

const DtypeInfo* find_dtype(at::ScalarType type) {
  for (const DtypeInfo& info : kDtypes) {
    if (type == info.type) return &info;
  }
  return nullptr;
}

// A name from a hostile file, made safe for a one-line message: control bytes escaped, cut short.
std::string quote(const std::string& text) {
  constexpr size_t kMaxShown = 80;
  std::string out = "'";
  for (size_t i = 0; i < text.size() && i < kMaxShown; ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7f) {
      char escaped[8];
      std::snprintf(escaped, sizeof(escaped), "\\x%02x", c);
      out += escaped;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (text.size() > kMaxShown) out += "...";
  return out + "'";
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

uint64_t read_u64_le(const uint8_t* bytes) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | bytes[i];
  return value;
}

std::string u64_le_bytes(uint64_t value) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((value >> (8 * i)) & 0xff);
  return out;
}

// Parses the header text. nlohmann keeps only the last of duplicate keys, so tensor names (the
// keys at depth 1) are collected through the parser callback to catch a name given twice.
Json parse_header(const std::string& path, const char* begin, const char* end) {
  SG_CHECK(begin != end && *begin == '{',
           path << ": header does not start with '{'; hint: not a safetensors file, or its first "
                   "8 bytes (the header length) are damaged");
  std::set<std::string> names;
  std::string duplicate;
  auto on_event = [&](int depth, Json::parse_event_t event, Json& parsed) {
    if ((event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start) &&
        depth >= kMaxHeaderDepth) {
      SG_FAIL(path << ": header nests more than " << kMaxHeaderDepth
                   << " levels deep; hint: the header is damaged or not a safetensors header");
    }
    if (event == Json::parse_event_t::key && depth == 1 && duplicate.empty()) {
      const std::string& name = parsed.get_ref<const std::string&>();
      if (!names.insert(name).second) duplicate = name;
    }
    return true;
  };
  Json header;
  try {
    header = Json::parse(begin, end, on_event);
  } catch (const Json::exception& e) {
    SG_FAIL(path << ": header is not valid JSON (" << e.what()
                 << "); hint: the file is damaged or was not written as safetensors");
  }
  SG_CHECK(duplicate.empty(), path << ": tensor name " << quote(duplicate)
                                   << " appears twice in the header; hint: every name must be unique");
  SG_CHECK(header.is_object(), path << ": header is a JSON " << header.type_name()
                                    << ", expected an object; hint: not a safetensors file");
  return header;
}

Metadata parse_metadata(const std::string& path, const Json& value) {
  SG_CHECK(value.is_object(), path << ": \"__metadata__\" is a JSON " << value.type_name()
                                   << ", expected an object of strings; hint: the header is damaged");
  Metadata metadata;
  for (auto it = value.begin(); it != value.end(); ++it) {
    SG_CHECK(it.value().is_string(),
             path << ": \"__metadata__\" value for " << quote(it.key()) << " is a JSON "
                  << it.value().type_name()
                  << ", expected a string; hint: safetensors metadata holds only strings "
                     "(encode other values as JSON text)");
    metadata[it.key()] = it.value().get<std::string>();
  }
  return metadata;
}

// Reads one header entry and checks everything that concerns it alone: fields, types, the shape
// and that the span's length matches shape x dtype size and lies inside the data section.
TensorEntry parse_entry(const std::string& path, const std::string& name, const Json& value,
                        uint64_t data_size) {
  const std::string where = path + ": tensor " + quote(name);
  SG_CHECK(!name.empty(), path << ": a tensor has an empty name; hint: the header is damaged");
  SG_CHECK(value.is_object(), where << " is a JSON " << value.type_name()
                                    << ", expected an object; hint: the header is damaged");
  for (auto it = value.begin(); it != value.end(); ++it) {
    SG_CHECK(it.key() == "dtype" || it.key() == "shape" || it.key() == "data_offsets",
             where << " has an unknown field " << quote(it.key())
                   << "; hint: entries hold only dtype, shape and data_offsets");
  }
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    SG_CHECK(value.contains(field), where << " has no \"" << field
                                          << "\" field; hint: the header is damaged");
  }

  TensorEntry entry;
  entry.name = name;
  const Json& dtype = value["dtype"];
  SG_CHECK(dtype.is_string(), where << ": \"dtype\" is a JSON " << dtype.type_name()
                                    << ", expected a string such as \"F32\"; hint: the header is damaged");
  entry.dtype = dtype.get<std::string>();
  const DtypeInfo* info = find_dtype(entry.dtype);
  SG_CHECK(info != nullptr, where << " has unsupported dtype " << quote(entry.dtype)
                                  << "; hint: supported dtypes are " << kDtypeList);
  entry.scalar_type = info->type;

  const Json& shape = value["shape"];
  SG_CHECK(shape.is_array(), where << ": \"shape\" is a JSON " << shape.type_name()
                                   << ", expected an array of integers; hint: the header is damaged");
  // extent = dtype size x every dimension (zeros counted as 1) must fit int64 so that LibTorch's
  // stride arithmetic cannot overflow either; bytes is the real size.
  uint64_t extent = info->size;
  uint64_t bytes = info->size;
  for (const Json& dim : shape) {
    SG_CHECK(dim.is_number_integer(),
             where << ": shape holds a " << (dim.is_number() ? "non-integer number" : dim.type_name())
                   << ", expected integers; hint: the header is damaged");
    SG_CHECK(dim.is_number_unsigned(), where << ": shape has negative dimension "
                                             << dim.get<int64_t>()
                                             << "; hint: the header is damaged");
    uint64_t size = dim.get<uint64_t>();
    bool overflow = __builtin_mul_overflow(extent, std::max<uint64_t>(size, 1), &extent);
    SG_CHECK(!overflow && extent <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
             where << ": shape dimensions times the " << entry.dtype
                   << " size overflow 64 bits; hint: the header is damaged");
    bytes *= size;  // bytes <= extent, so no overflow
    entry.shape.push_back(static_cast<int64_t>(size));
  }

  const Json& offsets = value["data_offsets"];
  SG_CHECK(offsets.is_array() && offsets.size() == 2 && offsets[0].is_number_unsigned() &&
               offsets[1].is_number_unsigned(),
           where << ": \"data_offsets\" must be two non-negative integers [begin, end]; hint: the "
                    "header is damaged");
  entry.begin = offsets[0].get<uint64_t>();
  entry.end = offsets[1].get<uint64_t>();
  SG_CHECK(entry.begin <= entry.end, where << ": data_offsets begin " << entry.begin
                                           << " is after end " << entry.end
                                           << "; hint: the header is damaged");
  SG_CHECK(entry.end <= data_size,
           where << ": data_offsets [" << entry.begin << ", " << entry.end
                 << "] run past the data section of " << data_size
                 << " bytes; hint: the file is truncated");
  SG_CHECK(entry.end - entry.begin == bytes,
           where << ": shape " << shape_text(entry.shape) << " x " << entry.dtype << " is "
                 << bytes << " bytes but data_offsets [" << entry.begin << ", " << entry.end
                 << "] span " << entry.end - entry.begin << "; hint: the header is damaged");
  return entry;
}

// Spans must tile the data section exactly, as in the reference implementation: in offset order,
// each starts where the previous ended, the first at 0, the last at the end. Sorts `entries`.
void check_spans(const std::string& path, std::vector<TensorEntry>& entries, uint64_t data_size) {
  std::sort(entries.begin(), entries.end(), [](const TensorEntry& a, const TensorEntry& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });
  uint64_t position = 0;
  const TensorEntry* previous = nullptr;  // the entry whose span ends at `position`
  for (const TensorEntry& entry : entries) {
    SG_CHECK(entry.begin >= position,
             path << ": tensor " << quote(entry.name) << " at [" << entry.begin << ", "
                  << entry.end << "] overlaps tensor " << quote(previous->name) << " at ["
                  << previous->begin << ", " << previous->end
                  << "]; hint: the header is damaged");
    SG_CHECK(entry.begin == position,
             path << ": " << entry.begin - position << " unused bytes before tensor "
                  << quote(entry.name) << " (data offsets " << position << " to " << entry.begin
                  << "); hint: the data section must be covered exactly, with no holes");
    position = entry.end;
    previous = &entry;
  }
  SG_CHECK(position == data_size,
           path << ": " << data_size - position << " bytes after the last tensor (data section is "
                << data_size << " bytes, tensors cover " << position
                << "); hint: the file has trailing data or the header is damaged");
}

// A tensor, ready to write: its name, contiguous-CPU-to-be source, dtype and place in the data.
struct PlannedTensor {
  const std::string* name;
  const at::Tensor* tensor;
  const DtypeInfo* dtype;
  uint64_t begin;
  uint64_t end;
};

// The reader rejects holes, so the writer cannot pad between tensors to align them. Instead it
// orders the data section by element size, largest first (stable, so equal sizes keep their
// given order): with the data section starting at a multiple of 8, every 8-byte tensor starts at
// a multiple of 8, then every 4-byte one at a multiple of 4, and so on — each tensor is aligned to
// its own element size, so the reader maps all of them zero-copy. The header lists them in that
// data order.
std::vector<PlannedTensor> plan_layout(const std::string& where, const StateDict& tensors) {
  std::vector<PlannedTensor> plan;
  plan.reserve(tensors.size());
  // OrderedDict itself refuses duplicate keys, so names are unique here.
  for (const auto& item : tensors) {
    const std::string& name = item.key();
    const at::Tensor& tensor = item.value();
    SG_CHECK(!name.empty(), where << ": a tensor has an empty name; hint: give every tensor a name");
    SG_CHECK(name != kMetadataKey, where << ": a tensor is named \"__metadata__\", which safetensors "
                                           "reserves for metadata; hint: rename the tensor");
    SG_CHECK(tensor.defined(), where << ": tensor " << quote(name)
                                     << " is undefined; hint: give it a value or leave it out");
    const DtypeInfo* dtype = find_dtype(tensor.scalar_type());
    SG_CHECK(dtype != nullptr, where << ": tensor " << quote(name) << " has dtype "
                                     << tensor.scalar_type()
                                     << ", which safetensors cannot hold; hint: convert it to one of "
                                     << kDtypeList);
    plan.push_back({&name, &tensor, dtype, 0, 0});
  }
  std::stable_sort(plan.begin(), plan.end(), [](const PlannedTensor& a, const PlannedTensor& b) {
    return a.dtype->size > b.dtype->size;
  });
  uint64_t position = 0;
  for (PlannedTensor& planned : plan) {
    planned.begin = position;
    position += static_cast<uint64_t>(planned.tensor->numel()) * planned.dtype->size;
    planned.end = position;
  }
  return plan;
}

// The 8-byte length plus the header JSON, padded with spaces so the data section starts at a
// multiple of 8.
std::string header_bytes(const std::string& where, const std::vector<PlannedTensor>& plan,
                         const Metadata& metadata) {
  OrderedJson header = OrderedJson::object();
  if (!metadata.empty()) {
    OrderedJson meta = OrderedJson::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header[kMetadataKey] = std::move(meta);
  }
  for (const PlannedTensor& planned : plan) {
    OrderedJson entry = OrderedJson::object();
    entry["dtype"] = planned.dtype->name;
    entry["shape"] = planned.tensor->sizes().vec();
    entry["data_offsets"] = OrderedJson::array({planned.begin, planned.end});
    header[*planned.name] = std::move(entry);
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const OrderedJson::exception& e) {
    SG_FAIL(where << ": cannot write the header (" << e.what()
                  << "); hint: tensor names and metadata must be valid UTF-8");
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  SG_CHECK(text.size() <= kSafetensorsMaxHeaderBytes,
           where << ": the header would be " << text.size() << " bytes, over the "
                 << kSafetensorsMaxHeaderBytes << "-byte limit readers enforce; hint: too many "
                                                  "tensors or too much metadata for one file; shard it");
  return u64_le_bytes(text.size()) + text;
}

using ByteSink = std::function<void(const void* data, size_t size)>;

// Streams the whole file to `sink`, one tensor at a time (only one CPU copy alive at once).
void write_safetensors(const std::string& where, const StateDict& tensors,
                       const Metadata& metadata, const ByteSink& sink) {
  std::vector<PlannedTensor> plan = plan_layout(where, tensors);
  const std::string header = header_bytes(where, plan, metadata);
  sink(header.data(), header.size());
  for (const PlannedTensor& planned : plan) {
    if (planned.end == planned.begin) continue;
    at::Tensor source = *planned.tensor;
    if (source.layout() != at::kStrided) source = source.to_dense();
    // resolve_neg/resolve_conj: a lazily negated view would otherwise be written un-negated.
    at::Tensor cpu = source.to(at::kCPU).resolve_conj().resolve_neg().contiguous();
    sink(cpu.data_ptr(), planned.end - planned.begin);
  }
}

bool is_shard_file_name(const std::string& name) {
  // model-<digits>-of-<digits>.safetensors
  const std::string prefix = "model-", middle = "-of-", suffix = ".safetensors";
  if (name.size() < prefix.size() + suffix.size() || name.rfind(prefix, 0) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
    return false;
  }
  std::string core = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  size_t split = core.find(middle);
  if (split == std::string::npos || split == 0 || split + middle.size() == core.size()) return false;
  std::string digits = core.substr(0, split) + core.substr(split + middle.size());
  return std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string shard_file_name(size_t index, size_t count) {
  char name[64];
  std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", index + 1, count);
  return name;
}

void remove_file(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove(path, ec);
  SG_CHECK(!ec, path << ": cannot remove stale file (" << ec.message()
                     << "); hint: is the directory writable?");
}

StateDict load_sharded(const std::string& dir, const std::string& index_path,
                       Metadata* metadata) {
  Json index;
  try {
    index = Json::parse(util::read_file(index_path));
  } catch (const Json::exception& e) {
    SG_FAIL(index_path << ": not valid JSON (" << e.what()
                       << "); hint: the index is damaged; re-save the checkpoint");
  }
  SG_CHECK(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(),
           index_path << ": no \"weight_map\" object; hint: expected {\"metadata\": {...}, "
                         "\"weight_map\": {tensor name: shard file}}");
  const Json& weight_map = index["weight_map"];
  SG_CHECK(!weight_map.empty(),
           index_path << ": \"weight_map\" lists no tensors; hint: the index is damaged; re-save");

  std::map<std::string, std::vector<std::string>> names_by_shard;
  for (auto it = weight_map.begin(); it != weight_map.end(); ++it) {
    SG_CHECK(it.value().is_string(), index_path << ": weight_map value for " << quote(it.key())
                                                << " is a JSON " << it.value().type_name()
                                                << ", expected a shard file name; hint: the index is damaged");
    const std::string shard = it.value().get<std::string>();
    SG_CHECK(!shard.empty() && shard.find('/') == std::string::npos && shard != "." &&
                 shard != "..",
             index_path << ": shard " << quote(shard) << " for tensor " << quote(it.key())
                        << " is not a plain file name; hint: shards must sit beside the index");
    names_by_shard[shard].push_back(it.key());
  }

  std::vector<SafetensorsFile> shards;
  std::map<std::string, std::string> shard_of;  // tensor name -> the shard that holds it
  for (const auto& [shard, names] : names_by_shard) {
    const std::string shard_path = util::join_path(dir, shard);
    SG_CHECK(util::file_exists(shard_path),
             index_path << ": shard " << quote(shard) << " is listed but " << shard_path
                        << " does not exist; hint: copy every shard, or re-save the checkpoint");
    shards.push_back(SafetensorsFile::open(shard_path));
    for (const TensorEntry& entry : shards.back().entries()) {
      auto [it, inserted] = shard_of.emplace(entry.name, shard);
      SG_CHECK(inserted, dir << ": tensor " << quote(entry.name) << " is in two shards, "
                             << quote(it->second) << " and " << quote(shard)
                             << "; hint: the shards are from different saves");
    }
  }
  for (auto it = weight_map.begin(); it != weight_map.end(); ++it) {
    auto found = shard_of.find(it.key());
    SG_CHECK(found != shard_of.end() && found->second == it.value().get<std::string>(),
             index_path << ": tensor " << quote(it.key()) << " is listed in shard "
                        << quote(it.value().get<std::string>()) << " but that shard does not hold "
                        << "it; hint: the index and the shards are out of step; re-save");
  }
  for (const auto& [name, shard] : shard_of) {
    SG_CHECK(weight_map.contains(name), index_path << ": shard " << quote(shard) << " holds tensor "
                                                   << quote(name)
                                                   << ", which the index does not list; hint: the "
                                                      "index and the shards are out of step");
  }

  StateDict tensors;
  Metadata merged;
  for (const SafetensorsFile& shard : shards) {
    for (const TensorEntry& entry : shard.entries()) tensors.insert(entry.name, shard.get(entry.name));
    for (const auto& [key, value] : shard.metadata()) {
      auto [it, inserted] = merged.emplace(key, value);
      SG_CHECK(inserted || it->second == value,
               dir << ": shards disagree on metadata " << quote(key)
                   << "; hint: the shards are from different saves");
    }
  }
  if (metadata != nullptr) *metadata = std::move(merged);
  return tensors;
}

}  // namespace

at::ScalarType scalar_type_from_safetensors(const std::string& dtype) {
  const DtypeInfo* info = find_dtype(dtype);
  SG_CHECK(info != nullptr,
           "unsupported safetensors dtype " << quote(dtype) << "; hint: supported dtypes are "
                                            << kDtypeList);
  return info->type;
}

std::string safetensors_dtype_name(at::ScalarType type) {
  const DtypeInfo* info = find_dtype(type);
  SG_CHECK(info != nullptr, "dtype " << type << " cannot be stored in safetensors; hint: convert "
                                                "to one of "
                                     << kDtypeList);
  return info->name;
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile file;
  file.path_ = path;
  file.mapped_ = util::MappedFile::open(path);
  const uint8_t* bytes = file.mapped_->data();
  const uint64_t size = file.mapped_->size();
  SG_CHECK(size >= 8, path << ": file is " << size
                           << " bytes, too short for the 8-byte header length; hint: the file is "
                              "truncated or not a safetensors file");
  const uint64_t header_size = read_u64_le(bytes);
  SG_CHECK(header_size <= kSafetensorsMaxHeaderBytes,
           path << ": header length " << header_size << " is over the "
                << kSafetensorsMaxHeaderBytes
                << "-byte limit; hint: not a safetensors file, or its first 8 bytes are damaged");
  SG_CHECK(header_size <= size - 8, path << ": header length " << header_size
                                         << " runs past the end of the " << size
                                         << "-byte file; hint: the file is truncated");
  file.data_start_ = 8 + header_size;
  const uint64_t data_size = size - file.data_start_;

  const char* text = reinterpret_cast<const char*>(bytes + 8);
  Json header = parse_header(path, text, text + header_size);
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == kMetadataKey) {
      file.metadata_ = parse_metadata(path, it.value());
    } else {
      file.entries_.push_back(parse_entry(path, it.key(), it.value(), data_size));
    }
  }
  check_spans(path, file.entries_, data_size);

  file.index_by_name_order_.resize(file.entries_.size());
  for (size_t i = 0; i < file.entries_.size(); ++i) file.index_by_name_order_[i] = i;
  std::sort(file.index_by_name_order_.begin(), file.index_by_name_order_.end(),
            [&](size_t a, size_t b) { return file.entries_[a].name < file.entries_[b].name; });
  return file;
}

const TensorEntry* SafetensorsFile::find(const std::string& name) const {
  auto it = std::lower_bound(index_by_name_order_.begin(), index_by_name_order_.end(), name,
                             [&](size_t i, const std::string& key) { return entries_[i].name < key; });
  if (it == index_by_name_order_.end() || entries_[*it].name != name) return nullptr;
  return &entries_[*it];
}

bool SafetensorsFile::contains(const std::string& name) const { return find(name) != nullptr; }

const TensorEntry& SafetensorsFile::entry(const std::string& name) const {
  const TensorEntry* found = find(name);
  SG_CHECK(found != nullptr, path_ << ": no tensor named " << quote(name)
                                   << "; hint: the file holds " << entries_.size()
                                   << " tensors; list them with `skillgraft inspect`");
  return *found;
}

uint8_t* SafetensorsFile::data_of(const TensorEntry& e) const {
  return mapped_->data() + data_start_ + e.begin;
}

bool SafetensorsFile::is_zero_copy(const std::string& name) const {
  const TensorEntry& e = entry(name);
  if (e.end == e.begin) return false;  // nothing to view: get() returns a fresh empty tensor
  return reinterpret_cast<uintptr_t>(data_of(e)) % c10::elementSize(e.scalar_type) == 0;
}

at::Tensor SafetensorsFile::get(const std::string& name) const {
  const TensorEntry& e = entry(name);
  const at::TensorOptions options = at::TensorOptions().dtype(e.scalar_type).device(at::kCPU);
  if (e.end == e.begin) return at::empty(e.shape, options);
  uint8_t* data = data_of(e);
  if (e.scalar_type == at::kBool) {
    // Any byte but 0 or 1 in a bool tensor is undefined behaviour in LibTorch's kernels.
    SG_CHECK(std::all_of(data, data + (e.end - e.begin), [](uint8_t b) { return b <= 1; }),
             path_ << ": BOOL tensor " << quote(name)
                   << " holds bytes other than 0 and 1; hint: the data section is damaged");
  }
  if (is_zero_copy(name)) {
    std::shared_ptr<util::MappedFile> keep_alive = mapped_;
    return at::from_blob(data, e.shape, [keep_alive](void*) {}, options);
  }
  at::Tensor copy = at::empty(e.shape, options);
  std::memcpy(copy.data_ptr(), data, e.end - e.begin);
  return copy;
}

StateDict SafetensorsFile::load_all() const {
  StateDict tensors;
  tensors.reserve(entries_.size());
  for (const TensorEntry& e : entries_) tensors.insert(e.name, get(e.name));
  return tensors;
}

StateDict load_safetensors(const std::string& path, Metadata* metadata) {
  SafetensorsFile file = SafetensorsFile::open(path);
  if (metadata != nullptr) *metadata = file.metadata();
  return file.load_all();
}

void save_safetensors(const std::string& path, const StateDict& tensors,
                      const Metadata& metadata) {
  util::AtomicFileWriter writer(path);
  write_safetensors(path, tensors, metadata,
                    [&](const void* data, size_t size) { writer.write(data, size); });
  writer.commit();
}

std::string serialize_safetensors(const StateDict& tensors, const Metadata& metadata) {
  std::string bytes;
  write_safetensors("serialize_safetensors", tensors, metadata,
                    [&](const void* data, size_t size) {
                      bytes.append(static_cast<const char*>(data), size);
                    });
  return bytes;
}

StateDict load_safetensors_dir(const std::string& dir, Metadata* metadata) {
  SG_CHECK(util::is_directory(dir), dir << ": not a directory; hint: pass the checkpoint directory");
  const std::string single = util::join_path(dir, kSingleFileName);
  if (util::file_exists(single)) return load_safetensors(single, metadata);
  const std::string index = util::join_path(dir, kIndexFileName);
  SG_CHECK(util::file_exists(index),
           dir << ": neither " << kSingleFileName << " nor " << kIndexFileName
               << " is there; hint: is this an HF checkpoint directory with safetensors weights?");
  return load_sharded(dir, index, metadata);
}

void save_safetensors_dir(const std::string& dir, const StateDict& tensors,
                          const Metadata& metadata, uint64_t max_shard_bytes) {
  util::make_directories(dir);
  // Greedy split in the given order; a tensor larger than the limit gets a shard of its own.
  std::vector<StateDict> shards(1);
  uint64_t shard_bytes = 0, total_bytes = 0;
  for (const auto& item : tensors) {
    uint64_t bytes = static_cast<uint64_t>(item.value().numel()) * item.value().element_size();
    if (max_shard_bytes > 0 && !shards.back().is_empty() && shard_bytes + bytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().insert(item.key(), item.value());
    shard_bytes += bytes;
    total_bytes += bytes;
  }

  std::set<std::string> written;
  if (shards.size() == 1) {
    save_safetensors(util::join_path(dir, kSingleFileName), tensors, metadata);
    written.insert(kSingleFileName);
  } else {
    Json weight_map = Json::object();
    for (size_t i = 0; i < shards.size(); ++i) {
      const std::string name = shard_file_name(i, shards.size());
      save_safetensors(util::join_path(dir, name), shards[i], metadata);
      for (const auto& item : shards[i]) weight_map[item.key()] = name;
      written.insert(name);
    }
    Json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
    util::write_file_atomic(util::join_path(dir, kIndexFileName), index.dump(2) + "\n");
    written.insert(kIndexFileName);
  }

  // Remove what an earlier save left that this one did not write, so loading cannot mix them.
  // Listed first, removed after: removing while iterating a directory is unspecified.
  std::vector<std::string> stale;
  std::error_code ec;
  for (const auto& item : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = item.path().filename().string();
    bool ours = name == kSingleFileName || name == kIndexFileName || is_shard_file_name(name);
    if (ours && written.count(name) == 0) stale.push_back(item.path().string());
  }
  SG_CHECK(!ec, dir << ": cannot list directory (" << ec.message()
                    << "); hint: is the directory readable?");
  for (const std::string& path : stale) remove_file(path);
}

}  // namespace sg::io
