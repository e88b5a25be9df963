// safetensors against an independent Python implementation (tests/reference/safetensors_py.py),
// both directions: we read what it writes; it reads and checks what we write. Expected values come
// from the JSON the Python side writes, turned into bytes here without the code under test.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <map>

#include "io/safetensors.h"
#include "test_env.h"
#include "util/file.h"

namespace {

using Json = nlohmann::json;

struct Dtype {
  at::ScalarType type;
  size_t size;
};

// The test's own dtype table (the spec's names), not the library's.
const std::map<std::string, Dtype>& dtypes() {
  static const std::map<std::string, Dtype> table{
      {"F64", {at::kDouble, 8}}, {"F32", {at::kFloat, 4}}, {"F16", {at::kHalf, 2}},
      {"BF16", {at::kBFloat16, 2}}, {"I64", {at::kLong, 8}}, {"I32", {at::kInt, 4}},
      {"I16", {at::kShort, 2}},  {"I8", {at::kChar, 1}},  {"U8", {at::kByte, 1}},
      {"BOOL", {at::kBool, 1}}};
  return table;
}

template <typename T>
void append(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

// The little-endian bytes of a tensor's expected values, one element at a time.
std::string expected_bytes(const Json& tensor) {
  const std::string dtype = tensor["dtype"];
  std::string out;
  for (const Json& v : tensor["values"]) {
    if (dtype == "F64") append(out, v.get<double>());
    else if (dtype == "F32") append(out, static_cast<float>(v.get<double>()));
    else if (dtype == "F16") append(out, static_cast<at::Half>(static_cast<float>(v.get<double>())).x);
    else if (dtype == "BF16") append(out, v.get<uint16_t>());  // raw bits
    else if (dtype == "I64") append(out, v.get<int64_t>());
    else if (dtype == "I32") append(out, v.get<int32_t>());
    else if (dtype == "I16") append(out, v.get<int16_t>());
    else if (dtype == "I8") append(out, v.get<int8_t>());
    else append(out, v.get<uint8_t>());  // U8, BOOL
  }
  return out;
}

at::Tensor expected_tensor(const Json& tensor) {
  const Dtype& dtype = dtypes().at(tensor["dtype"].get<std::string>());
  at::Tensor t = at::empty(tensor["shape"].get<std::vector<int64_t>>(), at::TensorOptions(dtype.type));
  std::string bytes = expected_bytes(tensor);
  EXPECT_EQ(bytes.size(), static_cast<size_t>(t.numel()) * dtype.size);
  if (!bytes.empty()) std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
  return t;
}

std::string raw_bytes(const at::Tensor& tensor) {
  at::Tensor t = tensor.contiguous();
  return std::string(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
}

std::string script() { return sg::test::source_dir() + "/tests/reference/safetensors_py.py"; }

// Runs the Python `write`; returns the expected JSON.
Json python_write(const std::string& file, const std::string& expect) {
  auto result = sg::test::run_command(sg::test::python() + " " + sg::test::shell_quote(script()) +
                                      " write " + sg::test::shell_quote(file) + " " +
                                      sg::test::shell_quote(expect));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  return Json::parse(sg::util::read_file(expect));
}

sg::test::CommandResult python_check(const std::string& file, const std::string& expect) {
  return sg::test::run_command(sg::test::python() + " " + sg::test::shell_quote(script()) +
                               " check " + sg::test::shell_quote(file) + " " +
                               sg::test::shell_quote(expect));
}

sg::io::Metadata metadata_of(const Json& expected) {
  return expected["metadata"].get<sg::io::Metadata>();
}

TEST(SafetensorsReference, WeReadWhatPythonWrites) {
  std::string dir = sg::test::temp_dir("sg-st-ref");
  std::string file = sg::util::join_path(dir, "py.safetensors");
  Json expected = python_write(file, sg::util::join_path(dir, "py.json"));
  ASSERT_FALSE(HasFailure());

  sg::io::SafetensorsFile st = sg::io::SafetensorsFile::open(file);
  EXPECT_EQ(st.metadata(), metadata_of(expected));
  ASSERT_EQ(st.entries().size(), expected["tensors"].size());
  bool some_copied = false;
  for (size_t i = 0; i < st.entries().size(); ++i) {
    const Json& want = expected["tensors"][i];
    const std::string name = want["name"];
    SCOPED_TRACE(name);
    EXPECT_EQ(st.entries()[i].name, name);  // data order
    at::Tensor got = st.get(name);
    EXPECT_EQ(got.scalar_type(), dtypes().at(want["dtype"].get<std::string>()).type);
    EXPECT_EQ(got.sizes().vec(), want["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ(raw_bytes(got), expected_bytes(want));
    if (got.numel() > 0 && !st.is_zero_copy(name)) some_copied = true;
  }
  EXPECT_TRUE(some_copied) << "the Python file is unaligned on purpose; the copy path must run";
}

// The Python writer's expected tensors, as a StateDict for our writer; `expect` is their JSON.
sg::io::StateDict python_expected_tensors(const std::string& dir, std::string* expect, Json* expected) {
  *expect = sg::util::join_path(dir, "py.json");
  *expected = python_write(sg::util::join_path(dir, "py.safetensors"), *expect);
  sg::io::StateDict tensors;
  for (const Json& t : (*expected)["tensors"]) tensors.insert(t["name"], expected_tensor(t));
  return tensors;
}

TEST(SafetensorsReference, PythonReadsWhatWeWrite) {
  std::string dir = sg::test::temp_dir("sg-st-ref");
  std::string expect;
  Json expected;
  sg::io::StateDict tensors = python_expected_tensors(dir, &expect, &expected);
  ASSERT_FALSE(HasFailure());
  std::string ours = sg::util::join_path(dir, "ours.safetensors");
  sg::io::save_safetensors(ours, tensors, metadata_of(expected));
  auto result = python_check(ours, expect);
  EXPECT_EQ(result.exit_code, 0) << result.output;

  // The checker is not vacuous: one changed value is caught.
  Json altered = expected;
  for (Json& t : altered["tensors"]) {
    if (t["name"] == "f32.cube") t["values"][5] = t["values"][5].get<double>() + 1.0;
  }
  std::string altered_path = sg::util::join_path(dir, "altered.json");
  sg::util::write_file_atomic(altered_path, altered.dump());
  result = python_check(ours, altered_path);
  EXPECT_NE(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("f32.cube"), std::string::npos) << result.output;
}

TEST(SafetensorsReference, ShardedDirReadsBackThroughPython) {
  std::string dir = sg::test::temp_dir("sg-st-ref");
  std::string expect;
  Json expected;
  sg::io::StateDict tensors = python_expected_tensors(dir, &expect, &expected);
  ASSERT_FALSE(HasFailure());
  std::string model_dir = sg::util::join_path(dir, "model");
  sg::io::save_safetensors_dir(model_dir, tensors, metadata_of(expected), 64);
  ASSERT_TRUE(sg::util::file_exists(sg::util::join_path(model_dir, "model.safetensors.index.json")));
  auto result = python_check(model_dir, expect);
  EXPECT_EQ(result.exit_code, 0) << result.output;

  sg::io::Metadata metadata;
  sg::io::StateDict loaded = sg::io::load_safetensors_dir(model_dir, &metadata);
  EXPECT_EQ(metadata, metadata_of(expected));
  ASSERT_EQ(loaded.size(), tensors.size());
  for (const auto& item : tensors) {
    SCOPED_TRACE(item.key());
    EXPECT_EQ(raw_bytes(loaded[item.key()]), raw_bytes(item.value()));
  }
}

}  // namespace
