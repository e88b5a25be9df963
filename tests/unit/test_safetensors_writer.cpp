// The streaming safetensors writer: the same bytes as save_safetensors whatever order and pieces the
// data arrives in, from several threads; a missing piece or an exception leaves no file.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
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
