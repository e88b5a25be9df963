// The merge driver: opens the inputs, checks the options, and streams over the base's tensors —
// slab by slab (pages released after each), chunk by chunk in parallel — handing each chunk to the
// method's TensorMerger and its output to a sink: the streaming safetensors writer (a checkpoint) or
// preallocated tensors (in memory).
#include "compose/merge.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <regex>

#include "compose/merge_method.h"
#include "io/hf_checkpoint.h"
#include "io/safetensors_writer.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/file.h"
#include "util/log.h"

namespace sg::compose {

namespace {

struct MethodName {
  MergeMethod method;
  const char* name;
};
constexpr MethodName kMethods[] = {
    {MergeMethod::kLinear, "linear"},         {MergeMethod::kTaskArithmetic, "task_arithmetic"},
    {MergeMethod::kTies, "ties"},             {MergeMethod::kDareLinear, "dare_linear"},
    {MergeMethod::kDareTies, "dare_ties"},    {MergeMethod::kSparseUnion, "sparse_union"},
};

// Files of a model directory besides the weights, copied from the base into a merged checkpoint.
const char* const kCopiedFiles[] = {"generation_config.json", "skillgraft_tokenizer.json", "tokenizer.json",
                                    "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                                    "added_tokens.json", "vocab.json", "merges.txt"};

// Progress lines only for merges large enough to take a while.
constexpr int64_t kProgressElements = int64_t{1} << 24;

bool uses_density(MergeMethod method) {
  return method == MergeMethod::kTies || method == MergeMethod::kDareLinear || method == MergeMethod::kDareTies;
}

bool default_normalize(MergeMethod method) { return method == MergeMethod::kLinear || method == MergeMethod::kTies; }

at::ScalarType parse_output_dtype(const std::string& name) {
  if (name.empty()) return at::ScalarType::Undefined;
  if (name == "float32") return at::kFloat;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  SG_FAIL("unknown output dtype \"" << name << "\"; hint: float32, bfloat16 or float16");
}

std::string dtype_config_name(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    default: return "";
  }
}

std::unique_ptr<TensorMerger> make_merger(MergeMethod method) {
  switch (method) {
    case MergeMethod::kLinear: return make_linear_merger();
    case MergeMethod::kTaskArithmetic: return make_task_arithmetic_merger();
    case MergeMethod::kTies: return make_ties_merger();
    case MergeMethod::kDareLinear: return make_dare_linear_merger();
    case MergeMethod::kDareTies: return make_dare_ties_merger();
    case MergeMethod::kSparseUnion: return make_sparse_union_merger();
  }
  SG_FAIL("unknown merge method; hint: internal error");
}

// float32 values -> `count` elements of `type` at `out`.
void convert_from_float(const float* in, int64_t count, at::ScalarType type, void* out) {
  switch (type) {
    case at::kFloat:
      std::memcpy(out, in, count * sizeof(float));
      break;
    case at::kBFloat16: {
      auto* p = static_cast<c10::BFloat16*>(out);
      for (int64_t j = 0; j < count; ++j) p[j] = c10::BFloat16(in[j]);  // round to nearest even
      break;
    }
    case at::kHalf: {
      auto* p = static_cast<c10::Half*>(out);
      for (int64_t j = 0; j < count; ++j) p[j] = c10::Half(in[j]);
      break;
    }
    case at::kDouble: {
      auto* p = static_cast<double*>(out);
      for (int64_t j = 0; j < count; ++j) p[j] = in[j];
      break;
    }
    default:
      SG_FAIL("cannot write float32 values as " << type << "; hint: internal error");
  }
}

// Where merged tensors go, slab by slab in order (a file is written front to back).
class OutputSink {
 public:
  virtual ~OutputSink() = default;
  virtual at::ScalarType dtype(const std::string& name) const = 0;
  // Where flat elements [begin, end) of `name` go, as dtype(name): filled by several threads at
  // once, valid until slab_done(). Called from one thread, slabs in order.
  virtual uint8_t* slab(const std::string& name, int64_t begin, int64_t end) = 0;
  virtual void slab_done() {}
  // A tensor copied as is (non-floating).
  virtual void write_whole(const std::string& name, const at::Tensor& tensor) = 0;
};

// A checkpoint file, written sequentially (util::AppendFile: O_DIRECT where it can).
class FileSink : public OutputSink {
 public:
  explicit FileSink(io::SafetensorsStreamWriter& writer) : writer_(writer) {
    for (const io::TensorSpec& spec : writer.data_order()) dtypes_[spec.name] = spec.dtype;
    writer_.begin_sequential();
  }
  at::ScalarType dtype(const std::string& name) const override { return dtypes_.at(name); }
  uint8_t* slab(const std::string& name, int64_t begin, int64_t end) override {
    const size_t element = c10::elementSize(dtypes_.at(name));
    return writer_.stage(name, begin * element, (end - begin) * element);
  }
  void slab_done() override { writer_.staged(); }
  void write_whole(const std::string& name, const at::Tensor& tensor) override { writer_.write_tensor(name, tensor); }

 private:
  io::SafetensorsStreamWriter& writer_;
  std::map<std::string, at::ScalarType> dtypes_;
};

class MemorySink : public OutputSink {
 public:
  explicit MemorySink(io::StateDict& out) : out_(out) {}
  at::ScalarType dtype(const std::string& name) const override { return out_[name].scalar_type(); }
  uint8_t* slab(const std::string& name, int64_t begin, int64_t end) override {
    at::Tensor& target = out_[name];
    return static_cast<uint8_t*>(target.data_ptr()) + begin * target.element_size();
  }
  void write_whole(const std::string& name, const at::Tensor& tensor) override { out_[name].copy_(tensor); }

 private:
  io::StateDict& out_;
};

uint64_t delta_bytes(const TensorDelta& delta) {
  switch (delta.form) {
    case TensorDelta::Form::kAbsent: return 0;
    case TensorDelta::Form::kValues: return delta.values.numel() * delta.values.element_size();
    case TensorDelta::Form::kDense: return delta.dense.numel() * delta.dense.element_size();
    case TensorDelta::Form::kSparse:
      return delta.sparse_indices.numel() * delta.sparse_indices.element_size() +
             delta.sparse_delta.numel() * delta.sparse_delta.element_size();
  }
  return 0;
}

double resolved_density(const WeightedInput& input, const MergeOptions& options) {
  return input.density < 0 ? options.density : input.density;
}

void check_inputs(const std::vector<WeightedInput>& inputs, const MergeOptions& options) {
  std::vector<double> weights, densities;
  for (const WeightedInput& input : inputs) {
    weights.push_back(input.weight);
    densities.push_back(resolved_density(input, options));
  }
  validate_merge(options, weights, densities);
}

// Merges every tensor of `order` into `sink`; fills the report's counts.
void merge_tensors(const MergeBase& base, const std::vector<WeightedInput>& inputs, const MergeOptions& options,
                   const std::vector<std::string>& order, OutputSink& sink, MergeReport& report) {
  std::unique_ptr<TensorMerger> merger = make_merger(options.method);
  const bool normalize = options.normalize < 0 ? default_normalize(options.method) : options.normalize == 1;
  int64_t total = 0;
  for (const std::string& name : order) {
    if (base.tensors()[name].is_floating_point()) total += base.tensors()[name].numel();
  }
  std::unique_ptr<util::Progress> progress;
  if (total >= kProgressElements) {
    progress = std::make_unique<util::Progress>("merge " + merge_method_name(options.method) + " (elements)", total);
  }
  // Per thread, one slab of float32 output, for tensors written in another dtype (float32 ones are
  // merged straight into the sink's slab).
  std::vector<std::vector<float>> outputs(at::get_num_threads());
  // A whole tensor's float32 output, for mergers that ask for it. A finished one goes out slab by
  // slab while the next tensor's pass fills the same buffer behind it, so the file's writes overlap
  // the next merge: `pending` is what of the buffer still has to go out.
  std::vector<float> whole;
  struct Pending {
    std::string name;
    int64_t numel = 0;
    int64_t next = 0;  // the first element not yet given to the sink
  } pending;
  // Gives the sink the pending tensor's slabs up to element `upto` (all of it: -1).
  auto drain = [&](int64_t upto) {
    const int64_t end_at = upto < 0 ? pending.numel : std::min(upto, pending.numel);
    while (pending.next < end_at) {
      const int64_t slab_begin = pending.next;
      const int64_t slab_end = std::min(slab_begin + kSlabElements, pending.numel);
      const at::ScalarType type = sink.dtype(pending.name);
      const size_t element = c10::elementSize(type);
      uint8_t* target = sink.slab(pending.name, slab_begin, slab_end);
      parallel_chunks(slab_begin, slab_end, [&](int64_t begin, int64_t end) {
        uint8_t* to = target + (begin - slab_begin) * element;
        if (type == at::kFloat) {
          std::memcpy(to, whole.data() + begin, (end - begin) * sizeof(float));
        } else {
          convert_from_float(whole.data() + begin, end - begin, type, to);
        }
      });
      sink.slab_done();
      if (progress) progress->advance(slab_end - slab_begin);
      pending.next = slab_end;
    }
  };
  for (const std::string& name : order) {
    const at::Tensor& b = base.tensors()[name];
    report.tensors += 1;
    if (!b.is_floating_point()) {
      drain(-1);
      sink.write_whole(name, b);
      report.bytes_read += b.numel() * b.element_size();
      report.bytes_written += b.numel() * b.element_size();
      continue;
    }
    TensorJob job;
    job.name = name;
    job.base = b.contiguous();
    job.numel = b.numel();
    job.options = &options;
    job.merge_base = &base;
    job.normalize = normalize;
    bool touched = false;
    for (const WeightedInput& input : inputs) {
      job.deltas.push_back(input.input.tensor(name));
      job.weights.push_back(input.weight);
      job.densities.push_back(resolved_density(input, options));
      job.inputs.push_back(&input.input);
      touched = touched || !job.deltas.back().absent();
      report.bytes_read += delta_bytes(job.deltas.back());
    }
    const at::ScalarType out_type = sink.dtype(name);
    const size_t out_element = c10::elementSize(out_type);
    report.bytes_read += b.numel() * b.element_size();
    report.bytes_written += b.numel() * out_element;
    report.elements += job.numel;
    const bool copy = !touched && merger->identity_when_untouched(job);
    if (!copy) {
      merger->prepare(job);
      report.merged_tensors += 1;
    }
    // Merges [slab_begin, slab_end) into `into` (a float32 buffer of the whole tensor) when given,
    // else into the sink's slab `target`.
    auto merge_slab = [&](int64_t slab_begin, int64_t slab_end, float* into, uint8_t* target) {
      parallel_chunks(slab_begin, slab_end, [&](int64_t begin, int64_t end) {
        ChunkReader reader(job, copy ? Fill::kDeltas : merger->fill(), copy ? std::vector<bool>(job.deltas.size(), false)
                                                                              : std::vector<bool>());
        float* out;
        if (into != nullptr) {
          out = into + begin;
        } else if (out_type == at::kFloat) {
          out = reinterpret_cast<float*>(target) + (begin - slab_begin);
        } else {
          const int thread = at::get_thread_num();
          SG_CHECK(thread >= 0 && thread < static_cast<int>(outputs.size()),
                   "thread " << thread << " of " << outputs.size() << "; hint: internal error");
          outputs[thread].resize(kSlabElements);
          out = outputs[thread].data();
        }
        for (int64_t c = begin; c < end; c += kChunkElements) {
          const int64_t c_end = std::min(c + kChunkElements, end);
          Chunk& chunk = reader.read(c, c_end);
          if (copy) {
            std::memcpy(out + (c - begin), chunk.base, (c_end - c) * sizeof(float));
          } else {
            merger->combine(job, chunk, out + (c - begin));
          }
        }
        if (into == nullptr && out_type != at::kFloat) {
          convert_from_float(out, end - begin, out_type, target + (begin - slab_begin) * out_element);
        }
      });
    };
    if (!copy && merger->whole_tensor(job)) {
      if (whole.size() < static_cast<size_t>(job.numel)) {
        drain(-1);
        whole.resize(static_cast<size_t>(job.numel));
      }
      while (true) {
        for_each_slab(job, [&](int64_t slab_begin, int64_t slab_end) {
          drain(slab_end);
          merge_slab(slab_begin, slab_end, whole.data(), nullptr);
        });
        if (merger->finish(job, whole.data())) break;
        report.extra_passes += 1;  // the merger changed its plan: the merge again
      }
      drain(-1);
      pending = Pending{name, job.numel, 0};
      continue;
    }
    drain(-1);
    for_each_slab(job, [&](int64_t slab_begin, int64_t slab_end) {
      merge_slab(slab_begin, slab_end, nullptr, sink.slab(name, slab_begin, slab_end));
      sink.slab_done();
      if (progress) progress->advance(slab_end - slab_begin);
    });
  }
  drain(-1);
  report.extra_passes += merger->extra_passes();
  if (progress) progress->finish();
}

nlohmann::json inputs_json(const std::vector<WeightedInput>& inputs, const MergeOptions& options) {
  nlohmann::json list = nlohmann::json::array();
  for (const WeightedInput& input : inputs) {
    nlohmann::json item = {{"path", input.input.label()},
                           {"kind", input_kind_name(input.input.kind())},
                           {"weight", input.weight}};
    if (uses_density(options.method)) item["density"] = resolved_density(input, options);
    list.push_back(item);
  }
  return list;
}

bool same_directory(const std::string& a, const std::string& b) {
  std::error_code ec1, ec2;
  const auto pa = std::filesystem::weakly_canonical(a, ec1);
  const auto pb = std::filesystem::weakly_canonical(b, ec2);
  return !ec1 && !ec2 && pa == pb;
}

bool is_shard_file_name(const std::string& name) {
  static const std::regex shard(R"(model-\d+-of-\d+\.safetensors)");
  return std::regex_match(name, shard);
}

std::vector<WeightedInput> open_inputs(const MergeSpec& spec, const std::shared_ptr<const MergeBase>& base) {
  std::vector<WeightedInput> inputs;
  for (const MergeInputSpec& item : spec.inputs) {
    inputs.push_back(WeightedInput{MergeInput::open(item.path, base), item.weight, item.density});
  }
  return inputs;
}

void check_spec(const MergeSpec& spec) {
  SG_CHECK(!spec.inputs.empty(), "nothing to merge: no inputs; hint: give the checkpoints or skills to merge");
  std::vector<double> weights, densities;
  for (const MergeInputSpec& item : spec.inputs) {
    weights.push_back(item.weight);
    densities.push_back(item.density < 0 ? spec.options.density : item.density);
  }
  validate_merge(spec.options, weights, densities);
}

}  // namespace

// ---- shared chunking (merge_method.h) ----

ChunkReader::ChunkReader(const TensorJob& job, Fill fill, std::vector<bool> active)
    : job_(job), fill_(fill), active_(std::move(active)) {
  if (active_.empty()) active_.assign(job.deltas.size(), true);
  if (job.base.scalar_type() != at::kFloat) base_buffer_.resize(kChunkElements);
  scratch_.resize(3 * kChunkElements);
  chunk_.scratch = scratch_.data();
  input_buffers_.resize(job.deltas.size());
  chunk_.inputs.resize(job.deltas.size());
  for (size_t i = 0; i < job.deltas.size(); ++i) {
    input_buffers_[i].assign(kChunkElements, 0.0f);  // an absent input's delta stays 0
    chunk_.inputs[i] = input_buffers_[i].data();
  }
  if (fill_ == Fill::kDeltasAndCoverage) {
    covered_buffers_.resize(job.deltas.size());
    chunk_.covered.resize(job.deltas.size());
    for (size_t i = 0; i < job.deltas.size(); ++i) {
      covered_buffers_[i].assign(kChunkElements, 0);
      chunk_.covered[i] = covered_buffers_[i].data();
    }
  }
}

Chunk& ChunkReader::read(int64_t begin, int64_t end) {
  chunk_.begin = begin;
  chunk_.end = end;
  const int64_t n = end - begin;
  if (job_.base.scalar_type() == at::kFloat) {
    chunk_.base = job_.base.data_ptr<float>() + begin;
  } else {
    read_as_float(job_.base, begin, end, base_buffer_.data());
    chunk_.base = base_buffer_.data();
  }
  for (size_t i = 0; i < job_.deltas.size(); ++i) {
    if (!active_[i]) continue;
    const TensorDelta& delta = job_.deltas[i];
    float* buffer = input_buffers_[i].data();
    if (delta.absent()) {
      // Deltas stay 0 (methods never make a 0 nonzero); values are the base's.
      if (fill_ == Fill::kValues) std::memcpy(buffer, chunk_.base, n * sizeof(float));
      continue;
    }
    if (fill_ == Fill::kValues) {
      delta.fill_values(begin, end, chunk_.base, buffer);
    } else {
      delta.fill_delta(begin, end, chunk_.base, buffer);
      if (fill_ == Fill::kDeltasAndCoverage) delta.fill_coverage(begin, end, buffer, covered_buffers_[i].data());
    }
  }
  return chunk_;
}

void for_each_slab(const TensorJob& job, const std::function<void(int64_t, int64_t)>& body) {
  for (int64_t begin = 0; begin < job.numel; begin += kSlabElements) {
    const int64_t end = std::min(begin + kSlabElements, job.numel);
    body(begin, end);
    job.merge_base->release(job.name, begin, end);
    for (const MergeInput* input : job.inputs) input->release(job.name, begin, end);
  }
}

void parallel_chunks(int64_t begin, int64_t end, const std::function<void(int64_t, int64_t)>& body) {
  const int64_t chunks = (end - begin + kChunkElements - 1) / kChunkElements;
  at::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
    body(begin + first * kChunkElements, std::min(begin + last * kChunkElements, end));
  });
}

// ---- names, options ----

MergeMethod parse_merge_method(const std::string& name) {
  for (const MethodName& item : kMethods) {
    if (name == item.name) return item.method;
  }
  SG_FAIL("unknown merge method \"" << name << "\"; hint: one of " << merge_method_list());
}

std::string merge_method_name(MergeMethod method) {
  for (const MethodName& item : kMethods) {
    if (method == item.method) return item.name;
  }
  return "?";
}

std::string merge_method_list() {
  std::string list;
  for (const MethodName& item : kMethods) list += (list.empty() ? "" : ", ") + std::string(item.name);
  return list;
}

OverlapRule parse_overlap_rule(const std::string& name) {
  if (name == "mean") return OverlapRule::kMean;
  if (name == "magnitude") return OverlapRule::kMagnitude;
  if (name == "weight") return OverlapRule::kWeight;
  SG_FAIL("unknown overlap rule \"" << name << "\"; hint: mean, magnitude or weight");
}

std::string overlap_rule_name(OverlapRule rule) {
  switch (rule) {
    case OverlapRule::kMean: return "mean";
    case OverlapRule::kMagnitude: return "magnitude";
    case OverlapRule::kWeight: return "weight";
  }
  return "?";
}

void validate_merge(const MergeOptions& options, const std::vector<double>& weights,
                    const std::vector<double>& densities) {
  const std::string method = merge_method_name(options.method);
  SG_CHECK(!weights.empty(), "nothing to merge: no inputs; hint: give the checkpoints or skills to merge");
  SG_CHECK(densities.size() == weights.size(), "internal error: " << weights.size() << " weights but "
                                                                  << densities.size() << " densities");
  parse_output_dtype(options.dtype);
  SG_CHECK(std::isfinite(options.lambda), "lambda is " << options.lambda << "; hint: a finite number, e.g. 1");
  SG_CHECK(options.normalize >= -1 && options.normalize <= 1, "normalize must be true or false");
  SG_CHECK(options.method != MergeMethod::kLinear || options.lambda == 1.0,
           "lambda applies to the task-vector methods, not linear; hint: scale linear's weights instead");
  SG_CHECK(options.method != MergeMethod::kSparseUnion || options.normalize < 0,
           "normalize does not apply to sparse_union (overlaps are resolved by --overlap)");
  double weight_sum = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    SG_CHECK(std::isfinite(weights[i]), "weight of input " << i + 1 << " is " << weights[i] << "; hint: a finite number");
    SG_CHECK(options.method != MergeMethod::kSparseUnion || weights[i] > 0,
             "weight of input " << i + 1 << " is " << weights[i] << "; hint: sparse_union weights must be > 0");
    weight_sum += weights[i];
    const double density = densities[i];
    if (uses_density(options.method)) {
      SG_CHECK(density > 0 && density <= 1, "density of input " << i + 1 << " is " << density << " for " << method
                                                                << "; hint: the share of entries kept, in (0, 1]");
    } else {
      SG_CHECK(density == 1.0, "density " << density << " does not apply to " << method
                                          << "; hint: density is for ties, dare_linear and dare_ties");
    }
  }
  const bool normalize = options.normalize < 0 ? default_normalize(options.method) : options.normalize == 1;
  SG_CHECK(options.method != MergeMethod::kLinear || !normalize || std::abs(weight_sum) > 1e-12,
           "linear merge weights sum to " << weight_sum << ", which normalize divides by; hint: weights that sum to 1");
}

nlohmann::json MergeReport::to_json() const {
  return {{"method", method},
          {"out", out_dir},
          {"inputs", inputs},
          {"tensors", tensors},
          {"merged_tensors", merged_tensors},
          {"elements", elements},
          {"bytes_read", bytes_read},
          {"bytes_written", bytes_written},
          {"seconds", seconds},
          {"commit_seconds", commit_seconds},
          {"threads", threads},
          {"direct_io", direct_io},
          {"extra_passes", extra_passes}};
}

// ---- entry points ----

io::StateDict merge_inputs(std::shared_ptr<const MergeBase> base, const std::vector<WeightedInput>& inputs,
                           const MergeOptions& options, MergeReport* report) {
  const auto start = std::chrono::steady_clock::now();
  check_inputs(inputs, options);
  const at::ScalarType out_type = parse_output_dtype(options.dtype);
  io::StateDict out;
  std::vector<std::string> order;
  for (const auto& item : base->tensors()) {
    const at::Tensor& b = item.value();
    const at::ScalarType type =
        b.is_floating_point() && out_type != at::ScalarType::Undefined ? out_type : b.scalar_type();
    out.insert(item.key(), at::empty(b.sizes(), at::TensorOptions().dtype(type)));
    order.push_back(item.key());
  }
  MergeReport local;
  local.method = merge_method_name(options.method);
  local.inputs = inputs_json(inputs, options);
  local.threads = at::get_num_threads();
  MemorySink sink(out);
  merge_tensors(*base, inputs, options, order, sink, local);
  local.seconds = util::seconds_since(start);
  if (report != nullptr) *report = local;
  return out;
}

MergeReport merge_inputs_to_checkpoint(std::shared_ptr<const MergeBase> base, const std::vector<WeightedInput>& inputs,
                                       const MergeOptions& options, const std::string& out_dir) {
  const auto start = std::chrono::steady_clock::now();
  check_inputs(inputs, options);
  SG_CHECK(!out_dir.empty(), "no output directory; hint: pass --out DIR");
  SG_CHECK(base->dir().empty() || !same_directory(out_dir, base->dir()),
           out_dir << ": is the base checkpoint directory; hint: write the merge to a new directory");
  for (const WeightedInput& input : inputs) {
    SG_CHECK(input.input.kind() != InputKind::kCheckpoint || !same_directory(out_dir, input.input.label()),
             out_dir << ": is one of the inputs; hint: write the merge to a new directory");
  }
  SG_CHECK(!util::file_exists(out_dir) || util::is_directory(out_dir),
           out_dir << ": exists and is not a directory; hint: --out names a directory to write the checkpoint in");
  util::make_directories(out_dir);
  const at::ScalarType out_type = parse_output_dtype(options.dtype);

  std::vector<io::TensorSpec> specs;
  for (const auto& item : base->tensors()) {
    const at::Tensor& b = item.value();
    const at::ScalarType type =
        b.is_floating_point() && out_type != at::ScalarType::Undefined ? out_type : b.scalar_type();
    specs.push_back({item.key(), type, b.sizes().vec()});
  }
  MergeReport report;
  report.method = merge_method_name(options.method);
  report.out_dir = out_dir;
  report.inputs = inputs_json(inputs, options);
  report.threads = at::get_num_threads();
  const nlohmann::json provenance = {{"method", report.method}, {"inputs", report.inputs}};
  io::SafetensorsStreamWriter writer(util::join_path(out_dir, "model.safetensors"), specs,
                                     {{"format", "pt"}, {"skillgraft_merge", provenance.dump()}});
  std::vector<std::string> order;
  for (const io::TensorSpec& spec : writer.data_order()) order.push_back(spec.name);
  FileSink sink(writer);
  merge_tensors(*base, inputs, options, order, sink, report);
  report.direct_io = writer.direct();
  const auto commit_start = std::chrono::steady_clock::now();
  writer.commit();
  report.commit_seconds = util::seconds_since(commit_start);

  // What an earlier save left that this one did not write, so that loading cannot mix them.
  std::vector<std::string> stale;
  for (const auto& entry : std::filesystem::directory_iterator(out_dir)) {
    const std::string name = entry.path().filename().string();
    if (name == "model.safetensors.index.json" || is_shard_file_name(name)) stale.push_back(entry.path().string());
  }
  for (const char* name : kCopiedFiles) {
    const std::string target = util::join_path(out_dir, name);
    const std::string source = base->dir().empty() ? "" : util::join_path(base->dir(), name);
    if (!source.empty() && util::file_exists(source)) {
      util::write_file_atomic(target, util::read_file(source));
    } else if (util::file_exists(target)) {
      stale.push_back(target);
    }
  }
  for (const std::string& path : stale) std::filesystem::remove(path);
  if (!base->config().is_null()) {
    nlohmann::json config = base->config();
    if (out_type != at::ScalarType::Undefined && config.is_object()) config["torch_dtype"] = dtype_config_name(out_type);
    io::write_json_file(util::join_path(out_dir, "config.json"), config);
  }
  report.seconds = util::seconds_since(start);
  return report;
}

MergeReport merge_to_checkpoint(const MergeSpec& spec, const std::string& out_dir) {
  check_spec(spec);
  std::shared_ptr<const MergeBase> base = MergeBase::open(spec.base);
  return merge_inputs_to_checkpoint(base, open_inputs(spec, base), spec.options, out_dir);
}

io::StateDict merge_to_state_dict(const MergeSpec& spec, MergeReport* report) {
  check_spec(spec);
  std::shared_ptr<const MergeBase> base = MergeBase::open(spec.base);
  return merge_inputs(base, open_inputs(spec, base), spec.options, report);
}

}  // namespace sg::compose
