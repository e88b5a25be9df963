// The streaming safetensors writer: the same bytes as save_safetensors whatever order and pieces the
// data arrives in, from several threads; a missing piece or an exception leaves no file. The
// sequential mode (staged regions, a background writer, O_DIRECT where it can) gives the same bytes.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdlib>
#include <random>
#include <thread>

#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "test_env.h"
#include "test_util.h"
#include "util/file.h"

namespace {

using sg::io::SafetensorsStreamWriter;
using sg::io::StateDict;
using sg::io::TensorSpec;

StateDict mixed_tensors() {
  torch::manual_seed(3);
  StateDict tensors;
  tensors.insert("a.weight", torch::randn({37, 11}));
  tensors.insert("b.half", torch::randn({5, 3}).to(torch::kHalf));
  tensors.insert("c.ids", torch::randint(0, 1000, {13}, torch::kLong));
  tensors.insert("d.bf16", torch::randn({7}).to(torch::kBFloat16));
  tensors.insert("e.empty", torch::zeros({0, 4}));
  tensors.insert("f.mask", torch::rand({9}) < 0.5);
  tensors.insert("g.scalar", torch::tensor(2.5));
  return tensors;
}

std::vector<TensorSpec> specs_of(const StateDict& tensors) {
  std::vector<TensorSpec> specs;
  for (const auto& item : tensors) specs.push_back({item.key(), item.value().scalar_type(), item.value().sizes().vec()});
  return specs;
}

TEST(SafetensorsStreamWriter, PiecesInAnyOrderFromTwoThreadsGiveSaveSafetensorsBytes) {
  const StateDict tensors = mixed_tensors();
  const sg::io::Metadata metadata = {{"format", "pt"}, {"note", "streamed"}};
  const std::string path = sg::test::temp_dir("sg-stream") + "/model.safetensors";
  {
    SafetensorsStreamWriter writer(path, specs_of(tensors), metadata);
    // Every tensor cut into pieces of 7 bytes, shuffled, written by two threads.
    struct Piece {
      std::string name;
      uint64_t offset;
      size_t size;
    };
    std::vector<Piece> pieces;
    for (const auto& item : tensors) {
      const uint64_t bytes = item.value().numel() * item.value().element_size();
      EXPECT_EQ(writer.tensor_bytes(item.key()), bytes);
      for (uint64_t offset = 0; offset < bytes; offset += 7) pieces.push_back({item.key(), offset, std::min<size_t>(7, bytes - offset)});
    }
    std::shuffle(pieces.begin(), pieces.end(), std::mt19937(5));
    auto run = [&](size_t first) {
      for (size_t p = first; p < pieces.size(); p += 2) {
        const at::Tensor& t = tensors[pieces[p].name];
        writer.write(pieces[p].name, pieces[p].offset, static_cast<const uint8_t*>(t.data_ptr()) + pieces[p].offset,
                     pieces[p].size);
      }
    };
    std::thread other(run, 1);
    run(0);
    other.join();
    writer.commit();
    EXPECT_EQ(writer.file_bytes(), sg::util::read_file(path).size());
  }
  EXPECT_EQ(sg::util::read_file(path), sg::io::serialize_safetensors(tensors, metadata));
}

TEST(SafetensorsStreamWriter, WholeTensorsInDataOrder) {
  const StateDict tensors = mixed_tensors();
  const std::string path = sg::test::temp_dir("sg-stream") + "/model.safetensors";
  SafetensorsStreamWriter writer(path, specs_of(tensors));
  // Data order: element size, largest first, stable.
  std::vector<std::string> order;
  for (const TensorSpec& spec : writer.data_order()) order.push_back(spec.name);
  EXPECT_EQ(order, (std::vector<std::string>{"c.ids", "a.weight", "e.empty", "g.scalar", "b.half", "d.bf16", "f.mask"}));
  for (const TensorSpec& spec : writer.data_order()) writer.write_tensor(spec.name, tensors[spec.name]);
  writer.commit();
  StateDict loaded = sg::io::load_safetensors(path);
  for (const auto& item : tensors) EXPECT_TRUE(torch::equal(loaded[item.key()], item.value())) << item.key();
}

// A float tensor over the 16 MB write buffer (and not a whole number of blocks), then the mixed ones.
StateDict sequential_tensors() {
  StateDict tensors = mixed_tensors();
  torch::manual_seed(4);
  tensors.insert("big", torch::randn({(5 << 20) + 3}));
  return tensors;
}

// Writes `tensors` sequentially: floats in stages of odd sizes, each filled by two threads; the
// rest by write_tensor or by 7-byte write() pieces, alternately.
void write_sequentially(SafetensorsStreamWriter& writer, const StateDict& tensors) {
  writer.begin_sequential();
  bool pieces = false;
  for (const TensorSpec& spec : writer.data_order()) {
    const at::Tensor& t = tensors[spec.name];
    const auto* bytes = static_cast<const uint8_t*>(t.data_ptr());
    const uint64_t size = t.numel() * t.element_size();
    if (t.scalar_type() == at::kFloat) {
      const uint64_t stage = (int64_t{1} << 20) * 4 + 12;
      for (uint64_t offset = 0; offset < size; offset += stage) {
        const uint64_t n = std::min(stage, size - offset);
        uint8_t* region = writer.stage(spec.name, offset, n);
        const uint64_t half = n / 8 * 4;
        std::thread other([&] { std::memcpy(region + half, bytes + offset + half, n - half); });
        std::memcpy(region, bytes + offset, half);
        other.join();
        writer.staged();
      }
    } else if (pieces) {
      for (uint64_t offset = 0; offset < size; offset += 7) writer.write(spec.name, offset, bytes + offset, std::min<uint64_t>(7, size - offset));
    } else {
      writer.write_tensor(spec.name, t);
    }
    pieces = !pieces;
  }
}

TEST(SafetensorsStreamWriter, SequentialStagesGiveSaveSafetensorsBytesWithAndWithoutDirectIo) {
  const StateDict tensors = sequential_tensors();
  const sg::io::Metadata metadata = {{"format", "pt"}, {"note", "sequential"}};
  const std::string expected = sg::io::serialize_safetensors(tensors, metadata);
  for (bool off : {false, true}) {
    sg::test::ScopedEnv setting("SG_NO_DIRECT_IO", off ? "1" : "0");
    const std::string path = sg::test::temp_dir("sg-stream") + "/model.safetensors";
    SafetensorsStreamWriter writer(path, specs_of(tensors), metadata);
    write_sequentially(writer, tensors);
    if (off) EXPECT_FALSE(writer.direct());
    writer.commit();
    const std::string written = sg::util::read_file(path);
    EXPECT_EQ(written.size(), expected.size()) << "SG_NO_DIRECT_IO=" << off;
    EXPECT_TRUE(written == expected) << "SG_NO_DIRECT_IO=" << off;
  }
}

TEST(SafetensorsStreamWriter, SequentialWritesOutOfOrderAreRefusedAndLeaveNoFile) {
  const StateDict tensors = mixed_tensors();
  const std::string dir = sg::test::temp_dir("sg-stream");
  const std::string path = dir + "/model.safetensors";
  {
    SafetensorsStreamWriter writer(path, specs_of(tensors));
    writer.write("c.ids", 0, tensors["c.ids"].data_ptr(), 8);
    EXPECT_NE(sg::test::error_of([&] { writer.begin_sequential(); }).find("begin_sequential after writes"),
              std::string::npos);
  }
  {
    SafetensorsStreamWriter writer(path, specs_of(tensors));
    writer.begin_sequential();
    // c.ids comes first in the file: a.weight now, or c.ids from byte 8, is out of order.
    EXPECT_NE(sg::test::error_of([&] { writer.stage("a.weight", 0, 4); }).find("out of order"), std::string::npos);
    EXPECT_NE(sg::test::error_of([&] { writer.write("c.ids", 8, tensors["c.ids"].data_ptr(), 8); }).find("out of order"),
              std::string::npos);
    writer.write("c.ids", 0, tensors["c.ids"].data_ptr(), 8);
    EXPECT_NE(sg::test::error_of([&] { writer.stage("c.ids", 8, 200); }).find("run past tensor \"c.ids\""),
              std::string::npos);
    EXPECT_NE(sg::test::error_of([&] { writer.commit(); }).find("got 8 of its 104 bytes"), std::string::npos);
  }
  EXPECT_FALSE(sg::util::file_exists(path));
  EXPECT_TRUE(std::filesystem::is_empty(dir)) << "the temp file must be removed";
}

TEST(SafetensorsStreamWriter, MissingPieceRefusesToCommitAndLeavesNoFile) {
  const StateDict tensors = mixed_tensors();
  const std::string dir = sg::test::temp_dir("sg-stream");
  const std::string path = dir + "/model.safetensors";
  {
    SafetensorsStreamWriter writer(path, specs_of(tensors));
    for (const auto& item : tensors) {
      if (item.key() != "a.weight") writer.write_tensor(item.key(), item.value());
    }
    writer.write("a.weight", 0, tensors["a.weight"].data_ptr(), 8);
    const std::string error = sg::test::error_of([&] { writer.commit(); });
    EXPECT_NE(error.find("tensor \"a.weight\" got 8 of its 1628 bytes"), std::string::npos) << error;
  }
  EXPECT_FALSE(sg::util::file_exists(path));
  EXPECT_TRUE(std::filesystem::is_empty(dir)) << "the temp file must be removed";
}

TEST(SafetensorsStreamWriter, BadDeclarationsAndWrites) {
  const std::string path = sg::test::temp_dir("sg-stream") + "/x.safetensors";
  EXPECT_NE(sg::test::error_of([&] { SafetensorsStreamWriter w(path, {{"a", at::kFloat, {2}}, {"a", at::kFloat, {3}}}); })
                .find("declared twice"),
            std::string::npos);
  EXPECT_NE(sg::test::error_of([&] { SafetensorsStreamWriter w(path, {{"__metadata__", at::kFloat, {2}}}); })
                .find("reserves"),
            std::string::npos);
  SafetensorsStreamWriter writer(path, {{"a", at::kFloat, {2}}});
  float values[3] = {1, 2, 3};
  EXPECT_NE(sg::test::error_of([&] { writer.write("a", 4, values, 8); }).find("run past tensor \"a\""), std::string::npos);
  EXPECT_NE(sg::test::error_of([&] { writer.write("b", 0, values, 4); }).find("not declared"), std::string::npos);
  EXPECT_NE(sg::test::error_of([&] { writer.write_tensor("a", torch::zeros({3})); }).find("not the declared F32 [2]"),
            std::string::npos);
}

}  // namespace
