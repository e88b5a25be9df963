#include "io/llama2c.h"

#include <torch/torch.h>

#include <cstring>

#include "util/error.h"
#include "util/file.h"

namespace sg::io {

namespace {

constexpr uint32_t kMagicV1 = 0x616b3432;  // "ak42"
constexpr size_t kV1HeaderBytes = 256;

// Hands out consecutive float32 tensors from the mapped file, checking bounds.
class FloatCursor {
 public:
  FloatCursor(std::shared_ptr<util::MappedFile> file, size_t offset)
      : file_(std::move(file)), offset_(offset) {}
  at::Tensor take(const std::vector<int64_t>& shape, const char* what) {
    int64_t count = 1;
    for (int64_t d : shape) count *= d;
    size_t bytes = static_cast<size_t>(count) * sizeof(float);
    SG_CHECK(offset_ + bytes <= file_->size(),
             file_->path() << ": truncated llama2.c checkpoint: " << what << " needs bytes "
                           << offset_ << ".." << offset_ + bytes << " but the file has "
                           << file_->size() << "; hint: re-download or re-export the model");
    at::Tensor t = torch::empty(shape, torch::kFloat);
    std::memcpy(t.data_ptr<float>(), file_->data() + offset_, bytes);
    offset_ += bytes;
    return t;
  }
  void skip(int64_t floats) { offset_ += static_cast<size_t>(floats) * sizeof(float); }
  size_t offset() const { return offset_; }

 private:
  std::shared_ptr<util::MappedFile> file_;
  size_t offset_;
};

int32_t read_i32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

void validate_header(const Llama2cHeader& h, const std::string& path) {
  auto in_range = [](int32_t v, int32_t hi) { return v > 0 && v <= hi; };
  SG_CHECK(in_range(h.dim, 1 << 16) && in_range(h.hidden_dim, 1 << 18) && in_range(h.n_layers, 1024) &&
               in_range(h.n_heads, 1024) && in_range(h.n_kv_heads, 1024) &&
               in_range(h.vocab_size, 1 << 22) && in_range(h.seq_len, 1 << 22),
           path << ": not a llama2.c checkpoint (header dim=" << h.dim << " hidden=" << h.hidden_dim
                << " layers=" << h.n_layers << " heads=" << h.n_heads << " kv_heads=" << h.n_kv_heads
                << " vocab=" << h.vocab_size << " seq_len=" << h.seq_len
                << "); hint: is this the tokenizer file, or another format?");
  SG_CHECK(h.dim % h.n_heads == 0 && h.n_heads % h.n_kv_heads == 0 && (h.dim / h.n_heads) % 2 == 0,
           path << ": inconsistent llama2.c header: dim " << h.dim << ", heads " << h.n_heads
                << ", kv heads " << h.n_kv_heads);
}

}  // namespace

at::Tensor permute_rope_rows(const at::Tensor& weight, int64_t num_heads) {
  const int64_t rows = weight.size(0), cols = weight.size(1), head_dim = rows / num_heads;
  return weight.reshape({num_heads, head_dim / 2, 2, cols}).transpose(1, 2).reshape({rows, cols}).contiguous();
}

Llama2cModel read_llama2c(const std::string& path) {
  auto file = util::MappedFile::open(path);
  SG_CHECK(file->size() >= 28, path << ": truncated llama2.c checkpoint (" << file->size()
                                    << " bytes, the header alone is 28)");
  Llama2cModel model;
  Llama2cHeader& h = model.header;
  const uint8_t* p = file->data();
  size_t data_offset = 28;
  uint32_t magic;
  std::memcpy(&magic, p, sizeof(magic));
  if (magic == kMagicV1) {
    int32_t version = read_i32(p + 4);
    SG_CHECK(version == 1, path << ": llama2.c export version " << version
                                << " is not supported (only float32 versions 0 and 1); hint: "
                                << "export with llama2.c's --version 1");
    SG_CHECK(file->size() >= kV1HeaderBytes, path << ": truncated llama2.c v1 header");
    p += 8;
    h.version = 1;
    data_offset = kV1HeaderBytes;
  }
  h.dim = read_i32(p);
  h.hidden_dim = read_i32(p + 4);
  h.n_layers = read_i32(p + 8);
  h.n_heads = read_i32(p + 12);
  h.n_kv_heads = read_i32(p + 16);
  h.vocab_size = read_i32(p + 20);
  h.seq_len = read_i32(p + 24);
  if (h.version == 1) {
    h.shared_classifier = p[28] != 0;
  } else {
    h.shared_classifier = h.vocab_size > 0;  // legacy: a negative vocab size marks an own classifier
    h.vocab_size = std::abs(h.vocab_size);
  }
  validate_header(h, path);

  const int64_t C = h.dim, F = h.hidden_dim, L = h.n_layers, V = h.vocab_size;
  const int64_t head_dim = C / h.n_heads, kv_dim = head_dim * h.n_kv_heads;
  FloatCursor cursor(file, data_offset);
  at::Tensor embedding, rms_att, rms_ffn, rms_final, wq, wk, wv, wo, w1, w2, w3;
  if (h.version == 0) {
    embedding = cursor.take({V, C}, "token_embedding_table");
    rms_att = cursor.take({L, C}, "rms_att_weight");
  } else {
    rms_att = cursor.take({L, C}, "attention_norm");
    rms_ffn = cursor.take({L, C}, "ffn_norm");
    rms_final = cursor.take({C}, "norm");
    embedding = cursor.take({V, C}, "tok_embeddings");
  }
  wq = cursor.take({L, C, C}, "wq");
  wk = cursor.take({L, kv_dim, C}, "wk");
  wv = cursor.take({L, kv_dim, C}, "wv");
  wo = cursor.take({L, C, C}, "wo");
  if (h.version == 0) rms_ffn = cursor.take({L, C}, "rms_ffn_weight");
  w1 = cursor.take({L, F, C}, "w1");
  w2 = cursor.take({L, C, F}, "w2");
  w3 = cursor.take({L, F, C}, "w3");
  if (h.version == 0) {
    rms_final = cursor.take({C}, "rms_final_weight");
    cursor.skip(static_cast<int64_t>(h.seq_len) * head_dim);  // freq_cis_real, freq_cis_imag
  }
  at::Tensor classifier;
  if (!h.shared_classifier) classifier = cursor.take({V, C}, "wcls");
  SG_CHECK(cursor.offset() == file->size(),
           path << ": llama2.c checkpoint has " << file->size() - std::min(cursor.offset(), file->size())
                << " unexpected trailing bytes (expected " << cursor.offset()
                << " bytes for this header); hint: the header does not match the weights");

  StateDict& w = model.weights;
  w.insert("model.embed_tokens.weight", embedding);
  for (int64_t i = 0; i < L; ++i) {
    std::string prefix = "model.layers." + std::to_string(i) + ".";
    w.insert(prefix + "input_layernorm.weight", rms_att[i].contiguous());
    w.insert(prefix + "self_attn.q_proj.weight", permute_rope_rows(wq[i], h.n_heads));
    w.insert(prefix + "self_attn.k_proj.weight", permute_rope_rows(wk[i], h.n_kv_heads));
    w.insert(prefix + "self_attn.v_proj.weight", wv[i].contiguous());
    w.insert(prefix + "self_attn.o_proj.weight", wo[i].contiguous());
    w.insert(prefix + "post_attention_layernorm.weight", rms_ffn[i].contiguous());
    w.insert(prefix + "mlp.gate_proj.weight", w1[i].contiguous());
    w.insert(prefix + "mlp.down_proj.weight", w2[i].contiguous());
    w.insert(prefix + "mlp.up_proj.weight", w3[i].contiguous());
  }
  w.insert("model.norm.weight", rms_final);
  if (!h.shared_classifier) w.insert("lm_head.weight", classifier);

  model.config = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"vocab_size", V},
      {"hidden_size", C},
      {"intermediate_size", F},
      {"num_hidden_layers", L},
      {"num_attention_heads", h.n_heads},
      {"num_key_value_heads", h.n_kv_heads},
      {"head_dim", head_dim},
      {"max_position_embeddings", h.seq_len},
      {"rms_norm_eps", 1e-5},  // llama2.c's rmsnorm
      {"rope_theta", 10000.0},
      {"hidden_act", "silu"},
      {"tie_word_embeddings", h.shared_classifier},
      {"attention_bias", false},
      {"bos_token_id", 1},
      {"eos_token_id", 2},
      {"torch_dtype", "float32"},
  };
  return model;
}

}  // namespace sg::io
