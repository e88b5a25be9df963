#include "compose/merge_input.h"

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <set>

#include "io/fingerprint.h"
#include "io/hf_checkpoint.h"
#include "io/safetensors.h"
#include "model/causal_lm.h"
#include "skills/lora_skill.h"
#include "skills/skill.h"
#include "util/error.h"
#include "util/file.h"

namespace sg::compose {

namespace {

constexpr char kSingleFileName[] = "model.safetensors";
constexpr char kIndexFileName[] = "model.safetensors.index.json";

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

std::string base_label(const MergeBase& base) { return base.dir().empty() ? "the base (in memory)" : base.dir(); }

// out[j] = a[j] - b[j]: a checkpoint's delta, the merge's hottest loop.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
void subtract(float* __restrict out, const float* __restrict a, const float* __restrict b, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] = a[j] - b[j];
}

// Drops the whole pages inside [data, data + bytes) from this process.
void drop_pages(const uint8_t* data, uint64_t bytes) {
  static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  uintptr_t first = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
  uintptr_t last = (reinterpret_cast<uintptr_t>(data) + bytes) / page * page;
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

// Checks a model's tensors (names, shapes, floating dtypes) against the base's.
void check_against_base(const std::string& label, const std::vector<std::string>& names,
                        const std::function<std::vector<int64_t>(const std::string&)>& shape_of,
                        const std::function<at::ScalarType(const std::string&)>& dtype_of, const MergeBase& base) {
  std::set<std::string> seen;
  for (const std::string& name : names) {
    const at::Tensor* b = base.tensors().find(name);
    SG_CHECK(b != nullptr, label << ": tensor \"" << name << "\" is not in the base " << base_label(base)
                                 << "; hint: merge only fine-tunes of the same base model");
    const std::vector<int64_t> shape = shape_of(name);
    SG_CHECK(shape == b->sizes().vec(), label << ": tensor \"" << name << "\" is " << shape_text(shape)
                                              << " but " << shape_text(b->sizes().vec()) << " in the base "
                                              << base_label(base) << "; hint: merge only fine-tunes of the same base model");
    SG_CHECK(!b->is_floating_point() || at::isFloatingType(dtype_of(name)),
             label << ": tensor \"" << name << "\" is " << dtype_of(name) << " but floating point in the base "
                   << base_label(base) << "; hint: merge only fine-tunes of the same base model");
    seen.insert(name);
  }
  for (const auto& item : base.tensors()) {
    SG_CHECK(seen.count(item.key()), label << ": has no tensor \"" << item.key() << "\", which the base "
                                           << base_label(base)
                                           << " has; hint: merge only fine-tunes of the same base model");
  }
}

void check_floating(const std::string& label, const at::Tensor& tensor, const std::string& name) {
  const at::ScalarType type = tensor.scalar_type();
  SG_CHECK(type == at::kFloat || type == at::kBFloat16 || type == at::kHalf || type == at::kDouble,
           label << ": tensor \"" << name << "\" is " << type
                 << ", which a merge cannot read; hint: floating tensors must be F32, BF16, F16 or F64");
}

}  // namespace

std::string input_kind_name(InputKind kind) {
  switch (kind) {
    case InputKind::kCheckpoint: return "checkpoint";
    case InputKind::kSparse: return "sparse";
    case InputKind::kLora: return "lora";
    case InputKind::kDense: return "dense";
  }
  return "?";
}

void read_as_float(const at::Tensor& tensor, int64_t begin, int64_t end, float* out) {
  const int64_t n = end - begin;
  switch (tensor.scalar_type()) {
    case at::kFloat:
      std::memcpy(out, tensor.data_ptr<float>() + begin, n * sizeof(float));
      break;
    case at::kBFloat16: {
      const c10::BFloat16* p = tensor.data_ptr<c10::BFloat16>() + begin;
      for (int64_t j = 0; j < n; ++j) out[j] = static_cast<float>(p[j]);
      break;
    }
    case at::kHalf: {
      const c10::Half* p = tensor.data_ptr<c10::Half>() + begin;
      for (int64_t j = 0; j < n; ++j) out[j] = static_cast<float>(p[j]);
      break;
    }
    case at::kDouble: {
      const double* p = tensor.data_ptr<double>() + begin;
      for (int64_t j = 0; j < n; ++j) out[j] = static_cast<float>(p[j]);
      break;
    }
    default:
      SG_FAIL("cannot read a " << tensor.scalar_type() << " tensor as float32; hint: internal error");
  }
}

// ---- CheckpointFiles ----

std::shared_ptr<CheckpointFiles> CheckpointFiles::open(const std::string& dir) {
  SG_CHECK(util::file_exists(dir), dir << ": no such checkpoint directory; hint: check the path");
  SG_CHECK(util::is_directory(dir), dir << ": expected a checkpoint directory (config.json + *.safetensors), got a file");
  auto files = std::make_shared<CheckpointFiles>();
  files->dir_ = dir;
  std::vector<std::string> paths;
  const std::string single = util::join_path(dir, kSingleFileName);
  if (util::file_exists(single)) {
    paths.push_back(single);
  } else {
    const std::string index = util::join_path(dir, kIndexFileName);
    SG_CHECK(util::file_exists(index), dir << ": neither " << kSingleFileName << " nor " << kIndexFileName
                                           << " is there; hint: is this an HF checkpoint directory with safetensors weights?");
    // load_safetensors_dir validates the index against the shards (every listed tensor in its
    // shard, none in two); it only maps them, so the cost is the headers.
    io::load_safetensors_dir(dir);
    nlohmann::json weight_map = io::read_json_file(index)["weight_map"];
    std::set<std::string> shards;
    for (auto it = weight_map.begin(); it != weight_map.end(); ++it) shards.insert(it.value().get<std::string>());
    for (const std::string& shard : shards) paths.push_back(util::join_path(dir, shard));
  }
  for (const std::string& path : paths) {
    files->files_.push_back(std::make_shared<io::SafetensorsFile>(io::SafetensorsFile::open(path)));
    for (const io::TensorEntry& entry : files->files_.back()->entries()) {
      SG_CHECK(files->file_of_.emplace(entry.name, files->files_.size() - 1).second,
               dir << ": tensor \"" << entry.name << "\" is in two shards; hint: the shards are from different saves");
      files->names_.push_back(entry.name);
    }
  }
  return files;
}

std::vector<int64_t> CheckpointFiles::shape(const std::string& name) const {
  return files_.at(file_of_.at(name))->entry(name).shape;
}

at::ScalarType CheckpointFiles::dtype(const std::string& name) const {
  return files_.at(file_of_.at(name))->entry(name).scalar_type;
}

at::Tensor CheckpointFiles::get(const std::string& name) const {
  auto it = file_of_.find(name);
  SG_CHECK(it != file_of_.end(), dir_ << ": no tensor \"" << name << "\"");
  return files_[it->second]->get(name);
}

void CheckpointFiles::release(const std::string& name, int64_t begin, int64_t end) const {
  auto it = file_of_.find(name);
  if (it == file_of_.end()) return;
  const io::SafetensorsFile& file = *files_[it->second];
  if (!file.is_zero_copy(name)) return;  // a copy on the heap: dropping its pages would zero it
  at::Tensor view = file.get(name);
  const uint64_t element = view.element_size();
  drop_pages(static_cast<const uint8_t*>(view.data_ptr()) + begin * element, (end - begin) * element);
}

// ---- MergeBase ----

std::shared_ptr<MergeBase> MergeBase::open(const std::string& dir) {
  SG_CHECK(util::file_exists(dir), dir << ": no such base checkpoint directory; hint: check --base");
  SG_CHECK(util::is_directory(dir), dir << ": the base must be a checkpoint directory (config.json + *.safetensors), got a file");
  const std::string config_path = util::join_path(dir, "config.json");
  SG_CHECK(util::file_exists(config_path),
           dir << ": no config.json; hint: an HF checkpoint directory holds config.json and model.safetensors");
  auto base = std::make_shared<MergeBase>();
  base->dir_ = dir;
  base->config_ = io::read_json_file(config_path);
  base->files_ = CheckpointFiles::open(dir);
  for (const std::string& name : base->files_->names()) base->tensors_.insert(name, base->files_->get(name));
  SG_CHECK(!base->tensors_.is_empty(), dir << ": the checkpoint holds no tensors; hint: is it complete?");
  return base;
}

std::shared_ptr<MergeBase> MergeBase::from_state_dict(io::StateDict weights, nlohmann::json config) {
  auto base = std::make_shared<MergeBase>();
  base->config_ = std::move(config);
  for (const auto& item : weights) base->tensors_.insert(item.key(), item.value().detach().cpu().contiguous());
  SG_CHECK(!base->tensors_.is_empty(), "the base weights are empty; hint: pass a model's weights");
  return base;
}

const std::string& MergeBase::fingerprint() const {
  std::lock_guard<std::mutex> lock(fingerprint_mutex_);
  if (fingerprint_.empty()) {
    fingerprint_ = io::state_dict_fingerprint(tensors_);
    // Hashing paged every tensor in; hand the pages back.
    if (files_) {
      for (const auto& item : tensors_) files_->release(item.key(), 0, item.value().numel());
    }
  }
  return fingerprint_;
}

bool MergeBase::matches_fingerprint(const std::string& fingerprint_wanted) const {
  if (fingerprint() == fingerprint_wanted) return true;
  if (dir_.empty()) return false;
  std::lock_guard<std::mutex> lock(fingerprint_mutex_);
  if (model_order_fingerprint_.empty()) {
    // A checkpoint skillgraft did not write may list its tensors in another order than the model's
    // parameters (what skills are fingerprinted over); that order needs the model itself.
    try {
      model::LoadedModel loaded = model::load_model_dir(dir_);
      model_order_fingerprint_ = io::state_dict_fingerprint(model::model_state_dict(*loaded.model));
    } catch (const std::exception&) {
      model_order_fingerprint_ = "-";  // not a model skillgraft can load: file order is all there is
    }
  }
  return model_order_fingerprint_ == fingerprint_wanted;
}

void MergeBase::release(const std::string& name, int64_t begin, int64_t end) const {
  if (files_) files_->release(name, begin, end);
}

// ---- TensorDelta ----

void TensorDelta::fill_delta(int64_t begin, int64_t end, const float* base, float* out) const {
  const int64_t n = end - begin;
  switch (form) {
    case Form::kAbsent:
      std::fill(out, out + n, 0.0f);
      break;
    case Form::kValues:
      if (values.scalar_type() == at::kFloat) {
        subtract(out, values.data_ptr<float>() + begin, base, n);
      } else {
        read_as_float(values, begin, end, out);
        for (int64_t j = 0; j < n; ++j) out[j] -= base[j];
      }
      break;
    case Form::kDense:
      std::memcpy(out, dense.data_ptr<float>() + begin, n * sizeof(float));
      break;
    case Form::kSparse: {
      std::fill(out, out + n, 0.0f);
      const int64_t* idx = sparse_indices.data_ptr<int64_t>();
      const float* d = sparse_delta.data_ptr<float>();
      const int64_t count = sparse_indices.numel();
      for (int64_t k = std::lower_bound(idx, idx + count, begin) - idx; k < count && idx[k] < end; ++k) {
        out[idx[k] - begin] = d[k];
      }
      break;
    }
  }
}

void TensorDelta::fill_values(int64_t begin, int64_t end, const float* base, float* out) const {
  if (form == Form::kValues) {
    read_as_float(values, begin, end, out);
    return;
  }
  fill_delta(begin, end, base, out);
  for (int64_t j = 0, n = end - begin; j < n; ++j) out[j] += base[j];
}

void TensorDelta::fill_coverage(int64_t begin, int64_t end, const float* delta, uint8_t* covered) const {
  const int64_t n = end - begin;
  switch (form) {
    case Form::kAbsent:
      std::fill(covered, covered + n, 0);
      break;
    case Form::kSparse: {
      std::fill(covered, covered + n, 0);
      const int64_t* idx = sparse_indices.data_ptr<int64_t>();
      const int64_t count = sparse_indices.numel();
      for (int64_t k = std::lower_bound(idx, idx + count, begin) - idx; k < count && idx[k] < end; ++k) {
        covered[idx[k] - begin] = 1;
      }
      break;
    }
    default:
      for (int64_t j = 0; j < n; ++j) covered[j] = delta[j] != 0.0f;
  }
}

// ---- MergeInput ----

MergeInput MergeInput::open(const std::string& path, std::shared_ptr<const MergeBase> base) {
  SG_CHECK(util::file_exists(path), path << ": no such file or directory; hint: an input is a checkpoint "
                                            "directory or a skill file (.safetensors)");
  if (util::is_directory(path)) {
    auto files = CheckpointFiles::open(path);
    check_against_base(
        path, files->names(), [&](const std::string& name) { return files->shape(name); },
        [&](const std::string& name) { return files->dtype(name); }, *base);
    MergeInput input;
    input.kind_ = InputKind::kCheckpoint;
    input.label_ = path;
    input.base_ = std::move(base);
    input.files_ = files;
    for (const std::string& name : files->names()) {
      at::Tensor tensor = files->get(name);
      if (input.base_->tensors()[name].is_floating_point()) check_floating(path, tensor, name);
      input.weights_.insert(name, tensor);
    }
    return input;
  }
  io::Metadata metadata;
  {
    io::SafetensorsFile file = [&] {
      try {
        return io::SafetensorsFile::open(path);
      } catch (const sg::Error& e) {
        SG_FAIL("cannot read merge input: " << e.what());
      }
    }();
    metadata = file.metadata();
  }
  SG_CHECK(skills::is_skill_metadata(metadata),
           path << ": neither a checkpoint directory nor a skillgraft skill file (its __metadata__ has no "
                   "format=skillgraft.skill); hint: pass a model directory, or a skill from skillgraft localize");
  const std::string kind = metadata.count("kind") ? metadata.at("kind") : "";
  if (kind == "sparse") return from_sparse_skill(skills::load_sparse_skill(path), std::move(base), true);
  if (kind == "lora") return from_lora_skill(skills::load_lora_skill(path), std::move(base), true);
  if (kind == "dense") return from_dense_skill(skills::load_dense_skill(path), std::move(base), true);
  SG_CHECK(kind != "neurons", path << ": a neuron set (kind=neurons) says where a skill is, not how it changes "
                                      "the weights, so it cannot be merged; hint: merge a sparse, LoRA or dense skill");
  SG_FAIL(path << ": skill kind \"" << kind << "\" cannot be merged; hint: merge sparse, lora or dense skills, or checkpoints");
}

MergeInput MergeInput::from_state_dict(io::StateDict weights, std::shared_ptr<const MergeBase> base,
                                       const std::string& label) {
  std::vector<std::string> names;
  for (const auto& item : weights) names.push_back(item.key());
  check_against_base(
      label, names, [&](const std::string& name) { return weights[name].sizes().vec(); },
      [&](const std::string& name) { return weights[name].scalar_type(); }, *base);
  MergeInput input;
  input.kind_ = InputKind::kCheckpoint;
  input.label_ = label;
  input.base_ = std::move(base);
  for (const auto& item : weights) {
    at::Tensor tensor = item.value().detach().cpu().contiguous();
    if (input.base_->tensors()[item.key()].is_floating_point()) check_floating(label, tensor, item.key());
    input.weights_.insert(item.key(), tensor);
  }
  return input;
}

namespace {

// A skill's base fingerprint, and each named tensor: in the base, same shape, floating.
void check_skill(const std::string& label, const std::string& fingerprint,
                 const std::map<std::string, std::vector<int64_t>>& shapes, const MergeBase& base, bool check_base) {
  if (check_base) {
    SG_CHECK(base.matches_fingerprint(fingerprint),
             label << ": the skill was made for base fingerprint " << fingerprint << ", but " << base_label(base)
                   << " is " << base.fingerprint() << "; hint: merge only skills localized from this base model");
  }
  for (const auto& [name, shape] : shapes) {
    const at::Tensor* b = base.tensors().find(name);
    SG_CHECK(b != nullptr, label << ": the skill has tensor \"" << name << "\", which the base " << base_label(base)
                                 << " does not; hint: merge only skills made from this base model");
    SG_CHECK(shape == b->sizes().vec(), label << ": tensor \"" << name << "\" is " << shape_text(shape)
                                              << " in the skill but " << shape_text(b->sizes().vec())
                                              << " in the base; hint: merge only skills of this base model");
    SG_CHECK(b->is_floating_point(), label << ": the skill changes tensor \"" << name
                                           << "\", which is not floating point in the base; hint: the skill is damaged");
  }
}

}  // namespace

MergeInput MergeInput::from_lora_skill(skills::LoraSkill skill, std::shared_ptr<const MergeBase> base, bool check_base) {
  const std::string label = skill.source.empty() ? "LoRA skill \"" + skill.task + "\"" : skill.source;
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& [name, part] : skill.tensors) shapes[name] = part.shape;
  check_skill(label, skill.base_fingerprint, shapes, *base, check_base);
  MergeInput input;
  input.kind_ = InputKind::kLora;
  input.label_ = label;
  input.base_ = std::move(base);
  input.lora_ = std::make_shared<const skills::LoraSkill>(std::move(skill));
  return input;
}

MergeInput MergeInput::from_dense_skill(skills::DenseSkill skill, std::shared_ptr<const MergeBase> base, bool check_base) {
  const std::string label = skill.source.empty() ? "dense skill \"" + skill.task + "\"" : skill.source;
  std::map<std::string, std::vector<int64_t>> shapes;
  for (auto& [name, delta] : skill.tensors) {
    shapes[name] = delta.sizes().vec();
    delta = delta.detach().cpu().to(at::kFloat).contiguous();
  }
  check_skill(label, skill.base_fingerprint, shapes, *base, check_base);
  MergeInput input;
  input.kind_ = InputKind::kDense;
  input.label_ = label;
  input.base_ = std::move(base);
  input.dense_ = std::make_shared<const skills::DenseSkill>(std::move(skill));
  return input;
}

MergeInput MergeInput::from_sparse_skill(skills::SparseSkill skill, std::shared_ptr<const MergeBase> base,
                                         bool check_base) {
  const std::string label = skill.source.empty() ? "sparse skill \"" + skill.task + "\"" : skill.source;
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& [name, part] : skill.tensors) shapes[name] = part.shape;
  check_skill(label, skill.base_fingerprint, shapes, *base, check_base);
  for (auto& [name, part] : skill.tensors) {
    const at::Tensor* b = base->tensors().find(name);
    part.indices = part.indices.to(at::kLong).contiguous();
    part.delta = part.delta.to(at::kFloat).contiguous();
    const int64_t count = part.indices.numel();
    SG_CHECK(part.delta.numel() == count, label << ": tensor \"" << name << "\" has " << count << " indices but "
                                                << part.delta.numel() << " deltas; hint: the skill is damaged");
    if (count > 0) {
      const int64_t* idx = part.indices.data_ptr<int64_t>();
      bool sorted = idx[0] >= 0 && idx[count - 1] < b->numel();
      for (int64_t k = 1; sorted && k < count; ++k) sorted = idx[k - 1] < idx[k];
      SG_CHECK(sorted, label << ": tensor \"" << name
                             << "\" has indices that are not sorted, unique and in range; hint: the skill is damaged");
    }
  }
  MergeInput input;
  input.kind_ = InputKind::kSparse;
  input.label_ = label;
  input.base_ = std::move(base);
  input.sparse_ = std::make_shared<const skills::SparseSkill>(std::move(skill));
  return input;
}

bool MergeInput::touches(const std::string& name) const {
  switch (kind_) {
    case InputKind::kCheckpoint: return weights_.contains(name);
    case InputKind::kSparse: return sparse_->tensors.count(name) > 0;
    case InputKind::kLora: return lora_->tensors.count(name) > 0;
    case InputKind::kDense: return dense_->tensors.count(name) > 0;
  }
  return false;
}

TensorDelta MergeInput::tensor(const std::string& name) const {
  TensorDelta delta;
  switch (kind_) {
    case InputKind::kCheckpoint:
      delta.form = TensorDelta::Form::kValues;
      delta.values = weights_[name];
      break;
    case InputKind::kSparse: {
      auto it = sparse_->tensors.find(name);
      if (it == sparse_->tensors.end()) break;
      delta.form = TensorDelta::Form::kSparse;
      delta.sparse_indices = it->second.indices;
      delta.sparse_delta = it->second.delta;
      break;
    }
    case InputKind::kLora: {
      auto it = lora_->tensors.find(name);
      if (it == lora_->tensors.end()) break;
      delta.form = TensorDelta::Form::kDense;
      delta.dense = skills::lora_dense_delta(it->second).to(at::kFloat).contiguous();
      break;
    }
    case InputKind::kDense: {
      auto it = dense_->tensors.find(name);
      if (it == dense_->tensors.end()) break;
      delta.form = TensorDelta::Form::kDense;
      delta.dense = it->second;
      break;
    }
  }
  return delta;
}

at::Tensor MergeInput::delta(const std::string& name) const {
  if (!touches(name)) return at::Tensor();
  const at::Tensor& b = base_->tensors()[name];
  TensorDelta part = tensor(name);
  at::Tensor base_float = b.to(at::kFloat).contiguous();
  at::Tensor out = at::empty(b.sizes(), at::TensorOptions().dtype(at::kFloat));
  part.fill_delta(0, b.numel(), base_float.data_ptr<float>(), out.data_ptr<float>());
  return out;
}

void MergeInput::release(const std::string& name, int64_t begin, int64_t end) const {
  if (files_) files_->release(name, begin, end);
}

}  // namespace sg::compose
