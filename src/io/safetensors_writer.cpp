#include "io/safetensors_writer.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "io/safetensors.h"
#include "util/error.h"
#include "util/file.h"

namespace sg::io {

namespace {

std::string errno_text() { return std::strerror(errno); }

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

uint64_t numel_of(const std::string& where, const TensorSpec& spec) {
  uint64_t n = 1;
  for (int64_t dim : spec.shape) {
    SG_CHECK(dim >= 0, where << ": tensor \"" << spec.name << "\" has negative dimension " << dim);
    SG_CHECK(!__builtin_mul_overflow(n, static_cast<uint64_t>(dim), &n),
             where << ": tensor \"" << spec.name << "\" shape " << shape_text(spec.shape) << " overflows 64 bits");
  }
  return n;
}

std::string u64_le_bytes(uint64_t value) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((value >> (8 * i)) & 0xff);
  return bytes;
}

}  // namespace

SafetensorsStreamWriter::SafetensorsStreamWriter(const std::string& path, const std::vector<TensorSpec>& tensors,
                                                 const Metadata& metadata)
    : path_(path), temp_path_(path + ".tmp." + std::to_string(::getpid())) {
  // The layout of save_safetensors: by element size, largest first, stable, so every tensor is
  // aligned to its own element size with no padding between tensors.
  order_ = tensors;
  for (const TensorSpec& spec : order_) {
    SG_CHECK(!spec.name.empty(), path << ": a tensor has an empty name; hint: give every tensor a name");
    SG_CHECK(spec.name != "__metadata__", path << ": a tensor is named \"__metadata__\", which safetensors "
                                                  "reserves for metadata; hint: rename the tensor");
    safetensors_dtype_name(spec.dtype);  // throws for a dtype safetensors cannot hold
  }
  std::stable_sort(order_.begin(), order_.end(), [](const TensorSpec& a, const TensorSpec& b) {
    return c10::elementSize(a.dtype) > c10::elementSize(b.dtype);
  });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header["__metadata__"] = std::move(meta);
  }
  std::vector<uint64_t> relative_begin;
  uint64_t position = 0;
  for (size_t i = 0; i < order_.size(); ++i) {
    const TensorSpec& spec = order_[i];
    SG_CHECK(index_.emplace(spec.name, i).second,
             path << ": tensor \"" << spec.name << "\" is declared twice; hint: names must be unique");
    uint64_t bytes = 0;
    SG_CHECK(!__builtin_mul_overflow(numel_of(path, spec), c10::elementSize(spec.dtype), &bytes),
             path << ": tensor \"" << spec.name << "\" is too large");
    relative_begin.push_back(position);
    bytes_.push_back(bytes);
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = safetensors_dtype_name(spec.dtype);
    entry["shape"] = spec.shape;
    entry["data_offsets"] = nlohmann::ordered_json::array({position, position + bytes});
    header[spec.name] = std::move(entry);
    position += bytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::ordered_json::exception& e) {
    SG_FAIL(path << ": cannot write the header (" << e.what()
                 << "); hint: tensor names and metadata must be valid UTF-8");
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  SG_CHECK(text.size() <= kSafetensorsMaxHeaderBytes,
           path << ": the header would be " << text.size() << " bytes, over the " << kSafetensorsMaxHeaderBytes
                << "-byte limit readers enforce; hint: too many tensors or too much metadata for one file");
  head_ = u64_le_bytes(text.size()) + text;
  for (uint64_t begin : relative_begin) begin_.push_back(head_.size() + begin);
  file_bytes_ = head_.size() + position;
  written_.reset(new std::atomic<uint64_t>[order_.size()]);
  for (size_t i = 0; i < order_.size(); ++i) written_[i] = 0;

  fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  SG_CHECK(fd_ >= 0, temp_path_ << ": cannot create (" << errno_text() << "); hint: is the directory writable?");
  util::write_at(fd_, temp_path_, head_.data(), head_.size(), 0);
}

SafetensorsStreamWriter::~SafetensorsStreamWriter() {
  appender_.reset();  // stops its thread before the file goes
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temp_path_.c_str());
}

size_t SafetensorsStreamWriter::index_of(const std::string& name) const {
  auto it = index_.find(name);
  SG_CHECK(it != index_.end(), path_ << ": tensor \"" << name << "\" was not declared; hint: internal error");
  return it->second;
}

uint64_t SafetensorsStreamWriter::tensor_bytes(const std::string& name) const { return bytes_[index_of(name)]; }

void SafetensorsStreamWriter::write(const std::string& name, uint64_t offset, const void* data, size_t size) {
  SG_CHECK(fd_ >= 0 && !committed_, path_ << ": write after commit");
  const size_t i = index_of(name);
  check_range(i, offset, size);
  if (appender_) {
    check_next(i, offset);
    appender_->append(data, size);
  } else {
    util::write_at(fd_, temp_path_, data, size, begin_[i] + offset);
  }
  written_[i] += size;
}

void SafetensorsStreamWriter::begin_sequential() {
  const bool written = std::any_of(written_.get(), written_.get() + order_.size(), [](const auto& n) { return n > 0; });
  SG_CHECK(fd_ >= 0 && !committed_ && !appender_ && !written,
           path_ << ": begin_sequential after writes; hint: internal error");
  appender_ = std::make_unique<util::AppendFile>(fd_, temp_path_);
  appender_->append(head_.data(), head_.size());  // the file from its first byte (whole blocks)
}

void SafetensorsStreamWriter::check_range(size_t i, uint64_t offset, size_t size) const {
  SG_CHECK(offset <= bytes_[i] && size <= bytes_[i] - offset,
           path_ << ": bytes [" << offset << ", " << offset + size << ") run past tensor \"" << order_[i].name
                 << "\" of " << bytes_[i] << " bytes; hint: internal error");
}

void SafetensorsStreamWriter::check_next(size_t i, uint64_t offset) const {
  SG_CHECK(begin_[i] + offset == appender_->size(),
           path_ << ": tensor \"" << order_[i].name << "\" bytes from " << offset << " written out of order (the file stands at "
                 << appender_->size() << ", they start at " << begin_[i] + offset << "); hint: internal error");
}

uint8_t* SafetensorsStreamWriter::stage(const std::string& name, uint64_t offset, size_t size) {
  SG_CHECK(appender_ && !committed_, path_ << ": stage() outside sequential mode; hint: internal error");
  const size_t i = index_of(name);
  check_range(i, offset, size);
  check_next(i, offset);
  written_[i] += size;
  return appender_->reserve(size);
}

void SafetensorsStreamWriter::staged() { appender_->commit(); }

void SafetensorsStreamWriter::write_tensor(const std::string& name, const at::Tensor& tensor) {
  const TensorSpec& spec = order_[index_of(name)];
  SG_CHECK(tensor.defined() && tensor.scalar_type() == spec.dtype && tensor.sizes().vec() == spec.shape,
           path_ << ": tensor \"" << name << "\" is not the declared " << safetensors_dtype_name(spec.dtype) << " "
                 << shape_text(spec.shape) << "; hint: internal error");
  at::Tensor cpu = tensor.to(at::kCPU).resolve_conj().resolve_neg().contiguous();
  if (cpu.numel() > 0) write(name, 0, cpu.data_ptr(), cpu.numel() * cpu.element_size());
}

void SafetensorsStreamWriter::commit() {
  SG_CHECK(fd_ >= 0 && !committed_, path_ << ": commit called twice");
  for (size_t i = 0; i < order_.size(); ++i) {
    SG_CHECK(written_[i] == bytes_[i], path_ << ": tensor \"" << order_[i].name << "\" got " << written_[i].load()
                                             << " of its " << bytes_[i]
                                             << " bytes; hint: internal error, the file is left unwritten");
  }
  if (appender_) {
    appender_->finish();
    appender_.reset();
  }
  SG_CHECK(::fsync(fd_) == 0, temp_path_ << ": fsync failed (" << errno_text() << ")");
  SG_CHECK(::close(fd_) == 0, temp_path_ << ": close failed (" << errno_text() << ")");
  fd_ = -1;
  SG_CHECK(::rename(temp_path_.c_str(), path_.c_str()) == 0,
           path_ << ": cannot rename temp file into place (" << errno_text() << ")");
  committed_ = true;
  std::filesystem::path parent = std::filesystem::path(path_).parent_path();
  util::fsync_directory(parent.empty() ? "." : parent.string());
}

}  // namespace sg::io
