// Streaming safetensors writer, for files too large to hold in memory: the header (every offset
// computed up front from the declared names, dtypes and shapes) is written first, then each
// tensor's bytes, in pieces, at their offsets; commit() checks that every byte came, fsyncs and
// renames the temp file into place. The layout is save_safetensors' (safetensors.h): data ordered by
// element size, largest first (stable), header padded to a multiple of 8, so the bytes are the same
// as save_safetensors of the same tensors.
//
// Two ways to write the data:
//  - random access: write() may be called from several threads at once for disjoint byte ranges
//    (pwrite), in any order;
//  - sequential (begin_sequential()): every byte in file order, through util::AppendFile's
//    background writer (O_DIRECT where the file system takes it): stage() a region, fill it (from
//    any threads), staged(); write() and write_tensor() append, and must come in order too.
// Construction, begin_sequential, stage/staged and commit() belong to one thread.
#pragma once

#include <ATen/core/Tensor.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "io/state_dict.h"
#include "util/append_file.h"

namespace sg::io {

struct TensorSpec {
  std::string name;
  at::ScalarType dtype = at::kFloat;
  std::vector<int64_t> shape;
};

class SafetensorsStreamWriter {
 public:
  // Plans the layout and writes the header to "<path>.tmp.<pid>". Throws for an empty, reserved
  // ("__metadata__") or duplicate name, a dtype safetensors cannot hold, or a header over the limit.
  SafetensorsStreamWriter(const std::string& path, const std::vector<TensorSpec>& tensors,
                          const Metadata& metadata = {});
  // Removes the temp file unless committed (an exception or a crash leaves `path` untouched).
  ~SafetensorsStreamWriter();
  SafetensorsStreamWriter(const SafetensorsStreamWriter&) = delete;
  SafetensorsStreamWriter& operator=(const SafetensorsStreamWriter&) = delete;

  // The tensors in data (file) order: writing them in this order writes the file front to back.
  const std::vector<TensorSpec>& data_order() const { return order_; }
  // Bytes of tensor `name`'s data (numel x element size); throws for an unknown name.
  uint64_t tensor_bytes(const std::string& name) const;
  // The whole file's size: 8 + header + data.
  uint64_t file_bytes() const { return file_bytes_; }

  // Writes `size` bytes of tensor `name`'s data starting `offset` bytes into it. Throws for an
  // unknown name or a range past the tensor's end.
  void write(const std::string& name, uint64_t offset, const void* data, size_t size);
  // Writes a whole tensor (any device; made contiguous CPU). Its dtype and shape must be the
  // declared ones.
  void write_tensor(const std::string& name, const at::Tensor& tensor);

  // Switches to sequential writing; call it before any write.
  void begin_sequential();
  // Sequential mode: a region for bytes [offset, offset + size) of tensor `name`, which must be the
  // next bytes of the file (at most util::AppendFile::kMaxReserve); fill it, then call staged().
  uint8_t* stage(const std::string& name, uint64_t offset, size_t size);
  void staged();
  // Whether sequential writes go around the page cache (O_DIRECT).
  bool direct() const { return appender_ != nullptr && appender_->direct(); }

  // Checks that exactly every tensor's bytes were written (a missing piece throws, naming the
  // tensor), fsyncs, renames over `path`, fsyncs the directory.
  void commit();

 private:
  size_t index_of(const std::string& name) const;
  // Throws unless bytes [offset, offset + size) lie within tensor i.
  void check_range(size_t i, uint64_t offset, size_t size) const;
  // Sequential mode: throws unless tensor i's bytes from `offset` come next in the file.
  void check_next(size_t i, uint64_t offset) const;

  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
  bool committed_ = false;
  std::vector<TensorSpec> order_;
  std::vector<uint64_t> begin_;  // absolute file offset of each tensor's data, in order_
  std::vector<uint64_t> bytes_;
  std::unique_ptr<std::atomic<uint64_t>[]> written_;  // bytes written per tensor
  std::unordered_map<std::string, size_t> index_;
  uint64_t file_bytes_ = 0;
  std::string head_;  // the 8-byte length and the header
  std::unique_ptr<util::AppendFile> appender_;
};

}  // namespace sg::io
