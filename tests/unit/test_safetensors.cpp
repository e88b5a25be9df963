// safetensors reader/writer: hostile files built byte by byte, byte-exact round trips, zero-copy,
// metadata, sharded directories and a mutation fuzz. Expected bytes and values are written by hand.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <thread>

#include "io/safetensors.h"
#include "test_env.h"
#include "util/error.h"
#include "util/file.h"

namespace {

using sg::io::Metadata;
using sg::io::SafetensorsFile;
using sg::io::StateDict;

// Little-endian u64, written out byte by byte (independent of the code under test).
std::string le64(uint64_t value) {
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
  return out;
}

std::string file_bytes(const std::string& header, const std::string& data = "") {
  return le64(header.size()) + header + data;
}

std::string write_bytes(const std::string& bytes, const std::string& name = "t.safetensors") {
  std::string path = sg::util::join_path(sg::test::temp_dir("sg-st"), name);
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

std::string entry_json(const std::string& dtype, const std::string& shape, uint64_t begin,
                       uint64_t end) {
  return R"({"dtype":")" + dtype + R"(","shape":)" + shape + R"(,"data_offsets":[)" +
         std::to_string(begin) + "," + std::to_string(end) + "]}";
}

// Opens and loads the file; passes if it throws sg::Error whose one-line message names the path
// and contains `keyword`.
testing::AssertionResult rejects(const std::string& bytes, const std::string& keyword) {
  std::string path = write_bytes(bytes);
  try {
    SafetensorsFile::open(path).load_all();
  } catch (const sg::Error& e) {
    std::string message = e.what();
    if (message.find(path) == std::string::npos)
      return testing::AssertionFailure() << "message does not name the file: " << message;
    if (message.find(keyword) == std::string::npos)
      return testing::AssertionFailure() << "message lacks '" << keyword << "': " << message;
    if (message.find('\n') != std::string::npos)
      return testing::AssertionFailure() << "message is not one line: " << message;
    if (message.find("hint:") == std::string::npos)
      return testing::AssertionFailure() << "message has no hint: " << message;
    return testing::AssertionSuccess();
  }
  return testing::AssertionFailure() << "accepted a bad file";
}

std::string raw_bytes(const at::Tensor& tensor) {
  at::Tensor t = tensor.contiguous();
  return std::string(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
}

// ---- hostile files: each case built by hand ----

TEST(SafetensorsHostile, EmptyFile) { EXPECT_TRUE(rejects("", "too short")); }

TEST(SafetensorsHostile, ShorterThan8Bytes) { EXPECT_TRUE(rejects("\x02\0\0\0\0", "too short")); }

TEST(SafetensorsHostile, HeaderLengthPastEndOfFile) {
  EXPECT_TRUE(rejects(le64(100) + "{}", "past the end"));
}

TEST(SafetensorsHostile, HeaderLengthOverLimit) {
  EXPECT_TRUE(rejects(le64(100ull * 1000 * 1000 + 1) + "{}", "limit"));
  EXPECT_TRUE(rejects(le64(~0ull) + "{}", "limit"));
}

TEST(SafetensorsHostile, HeaderNotJson) {
  EXPECT_TRUE(rejects(file_bytes(R"({"a": })"), "not valid JSON"));
  EXPECT_TRUE(rejects(file_bytes("{\"a\":\"\xff\xfe\"}"), "not valid JSON"));  // bad UTF-8
}

TEST(SafetensorsHostile, HeaderNotStartingWithBrace) {
  EXPECT_TRUE(rejects(file_bytes(" {}"), "start with '{'"));
  EXPECT_TRUE(rejects(file_bytes(""), "start with '{'"));
}

TEST(SafetensorsHostile, HeaderNotAnObject) {
  EXPECT_TRUE(rejects(file_bytes("[1, 2]"), "start with '{'"));
}

TEST(SafetensorsHostile, HeaderNestedTooDeep) {
  EXPECT_TRUE(rejects(file_bytes(R"({"a":)" + std::string(100000, '[')), "levels deep"));
}

TEST(SafetensorsHostile, EntryNotAnObject) {
  EXPECT_TRUE(rejects(file_bytes(R"({"a":[0,4]})"), "expected an object"));
}

TEST(SafetensorsHostile, EntryMissingField) {
  EXPECT_TRUE(rejects(file_bytes(R"({"a":{"shape":[1],"data_offsets":[0,4]}})", "0123"),
                      "no \"dtype\""));
  EXPECT_TRUE(rejects(file_bytes(R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", "0123"),
                      "no \"shape\""));
  EXPECT_TRUE(rejects(file_bytes(R"({"a":{"dtype":"F32","shape":[1]}})", "0123"),
                      "no \"data_offsets\""));
}

TEST(SafetensorsHostile, EntryUnknownField) {
  EXPECT_TRUE(rejects(
      file_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})", "0123"),
      "unknown field"));
}

TEST(SafetensorsHostile, EntryFieldsOfWrongType) {
  EXPECT_TRUE(rejects(file_bytes(R"({"a":{"dtype":7,"shape":[1],"data_offsets":[0,4]}})", "0123"),
                      "\"dtype\" is a JSON number"));
  EXPECT_TRUE(rejects(file_bytes(R"({"a":{"dtype":"F32","shape":"1","data_offsets":[0,4]}})",
                                 "0123"),
                      "\"shape\" is a JSON string"));
  EXPECT_TRUE(rejects(file_bytes(R"({"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}})",
                                 "0123"),
                      "expected integers"));
  EXPECT_TRUE(rejects(file_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4]}})",
                                 "0123"),
                      "two non-negative integers"));
  EXPECT_TRUE(rejects(file_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,"4"]}})",
                                 "0123"),
                      "two non-negative integers"));
  EXPECT_TRUE(rejects(file_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})",
                                 "0123"),
                      "two non-negative integers"));
}

TEST(SafetensorsHostile, UnknownDtype) {
  EXPECT_TRUE(rejects(file_bytes(R"({"a":)" + entry_json("C64", "[1]", 0, 8) + "}", "01234567"),
                      "unsupported dtype 'C64'"));
}

TEST(SafetensorsHostile, NegativeShapeDimension) {
  EXPECT_TRUE(rejects(file_bytes(R"({"a":)" + entry_json("F32", "[-1,2]", 0, 8) + "}", "01234567"),
                      "negative dimension -1"));
}

TEST(SafetensorsHostile, ShapeTimesDtypeSizeOverflows) {
  // 2^32 * 2^32 elements overflows 64 bits outright.
  EXPECT_TRUE(rejects(
      file_bytes(R"({"a":)" + entry_json("F32", "[4294967296,4294967296]", 0, 0) + "}"),
      "overflow"));
  // 2^62 elements x 4 bytes overflows only through the element size.
  EXPECT_TRUE(rejects(
      file_bytes(R"({"a":)" + entry_json("F32", "[4611686018427387904]", 0, 0) + "}"), "overflow"));
  // numel is 0, but the non-zero dimensions would still overflow LibTorch's strides.
  EXPECT_TRUE(rejects(
      file_bytes(R"({"a":)" + entry_json("F32", "[0,4294967296,4294967296]", 0, 0) + "}"),
      "overflow"));
}

TEST(SafetensorsHostile, SizeDisagreesWithShape) {
  EXPECT_TRUE(rejects(file_bytes(R"({"a":)" + entry_json("F32", "[2]", 0, 4) + "}", "0123"),
                      "span 4"));
}

TEST(SafetensorsHostile, BeginAfterEnd) {
  EXPECT_TRUE(rejects(file_bytes(R"({"a":)" + entry_json("F32", "[1]", 4, 0) + "}", "01234567"),
                      "is after end"));
}

TEST(SafetensorsHostile, OffsetsPastDataSection) {
  EXPECT_TRUE(rejects(file_bytes(R"({"a":)" + entry_json("F32", "[1]", 0, 4) + "}", "01"),
                      "past the data section"));
  EXPECT_TRUE(rejects(file_bytes(R"({"a":)" + entry_json("F32", "[0]", 9, 9) + "}", "01234567"),
                      "past the data section"));
}

TEST(SafetensorsHostile, OverlappingSpans) {
  std::string header = R"({"a":)" + entry_json("F32", "[2]", 0, 8) + R"(,"b":)" +
                       entry_json("F32", "[1]", 4, 8) + "}";
  EXPECT_TRUE(rejects(file_bytes(header, "01234567"), "overlaps"));
  // Identical spans, listed in "unordered" name order.
  header = R"({"z":)" + entry_json("F32", "[1]", 0, 4) + R"(,"y":)" +
           entry_json("F32", "[1]", 0, 4) + "}";
  EXPECT_TRUE(rejects(file_bytes(header, "0123"), "overlaps"));
}

TEST(SafetensorsHostile, HoleBetweenSpans) {
  std::string header = R"({"a":)" + entry_json("F32", "[1]", 0, 4) + R"(,"b":)" +
                       entry_json("F32", "[1]", 8, 12) + "}";
  EXPECT_TRUE(rejects(file_bytes(header, "0123456789ab"), "4 unused bytes before tensor 'b'"));
}

TEST(SafetensorsHostile, HoleAtStartOfData) {
  EXPECT_TRUE(rejects(file_bytes(R"({"a":)" + entry_json("F32", "[1]", 4, 8) + "}", "01234567"),
                      "4 unused bytes before tensor 'a'"));
}

TEST(SafetensorsHostile, BytesAfterLastSpan) {
  EXPECT_TRUE(rejects(file_bytes(R"({"a":)" + entry_json("F32", "[1]", 0, 4) + "}", "012345"),
                      "2 bytes after the last tensor"));
  EXPECT_TRUE(rejects(file_bytes("{}", "x"), "1 bytes after the last tensor"));
}

TEST(SafetensorsHostile, DuplicateTensorName) {
  // nlohmann alone would keep the second "a" and report a hole instead.
  std::string header = R"({"a":)" + entry_json("F32", "[1]", 0, 4) + R"(,"a":)" +
                       entry_json("F32", "[1]", 4, 8) + "}";
  EXPECT_TRUE(rejects(file_bytes(header, "01234567"), "'a' appears twice"));
}

TEST(SafetensorsHostile, EmptyTensorName) {
  EXPECT_TRUE(rejects(file_bytes(R"({"":)" + entry_json("F32", "[1]", 0, 4) + "}", "0123"),
                      "empty name"));
}

TEST(SafetensorsHostile, MetadataValueNotString) {
  EXPECT_TRUE(rejects(file_bytes(R"({"__metadata__":{"epoch":3}})"), "expected a string"));
}

TEST(SafetensorsHostile, MetadataNotObject) {
  EXPECT_TRUE(rejects(file_bytes(R"({"__metadata__":"x"})"), "expected an object of strings"));
}

TEST(SafetensorsHostile, BoolByteOtherThanZeroOrOne) {
  EXPECT_TRUE(rejects(file_bytes(R"({"m":)" + entry_json("BOOL", "[2]", 0, 2) + "}", "\x01\x02"),
                      "other than 0 and 1"));
}

TEST(SafetensorsHostile, ControlCharactersInNamesAreEscaped) {
  std::string header = R"({"a\nb":)" + entry_json("F32", "[1]", 0, 4) + "}";
  EXPECT_TRUE(rejects(file_bytes(header, "01"), "'a\\x0ab'"));
}

TEST(SafetensorsHostile, MissingFileNamesThePath) {
  std::string path = sg::util::join_path(sg::test::temp_dir("sg-st"), "absent.safetensors");
  try {
    SafetensorsFile::open(path);
    FAIL() << "expected sg::Error";
  } catch (const sg::Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

// ---- reading hand-built valid files ----

TEST(SafetensorsRead, HandBuiltFileGivesKnownValues) {
  // F32 [2] = {1.5, -2.5} (0x3fc00000, 0xc0200000), I16 scalar = -2 (0xfffe), metadata.
  std::string header = R"({"__metadata__":{"format":"pt"},"w":)" +
                       entry_json("F32", "[2]", 0, 8) + R"(,"s":)" + entry_json("I16", "[]", 8, 10) +
                       "}";
  std::string path = write_bytes(file_bytes(header, std::string("\0\0\xc0\x3f\0\0\x20\xc0\xfe\xff", 10)));
  SafetensorsFile file = SafetensorsFile::open(path);
  ASSERT_EQ(file.entries().size(), 2u);
  EXPECT_EQ(file.entries()[0].name, "w");  // data order
  EXPECT_EQ(file.entries()[1].name, "s");
  EXPECT_EQ(file.entry("s").dtype, "I16");
  EXPECT_EQ(file.metadata(), (Metadata{{"format", "pt"}}));
  at::Tensor w = file.get("w");
  EXPECT_EQ(w.scalar_type(), at::kFloat);
  EXPECT_EQ(w.sizes().vec(), std::vector<int64_t>({2}));
  EXPECT_EQ(w[0].item<float>(), 1.5f);
  EXPECT_EQ(w[1].item<float>(), -2.5f);
  at::Tensor s = file.get("s");
  EXPECT_EQ(s.dim(), 0);
  EXPECT_EQ(s.item<int16_t>(), -2);
  EXPECT_TRUE(file.contains("w"));
  EXPECT_FALSE(file.contains("x"));
  EXPECT_THROW(file.get("x"), sg::Error);
}

TEST(SafetensorsRead, EmptyHeaderAndZeroSizeTensors) {
  EXPECT_EQ(SafetensorsFile::open(write_bytes(file_bytes("{}"))).entries().size(), 0u);
  std::string header = R"({"z":)" + entry_json("F32", "[0,3]", 0, 0) + R"(,"u":)" +
                       entry_json("U8", "[1]", 0, 1) + R"(,"e":)" + entry_json("I64", "[0]", 1, 1) +
                       "}";
  StateDict tensors = sg::io::load_safetensors(write_bytes(file_bytes(header, "\x07")));
  ASSERT_EQ(tensors.size(), 3u);
  EXPECT_EQ(tensors["z"].sizes().vec(), std::vector<int64_t>({0, 3}));
  EXPECT_EQ(tensors["u"].item<uint8_t>(), 7);
  EXPECT_EQ(tensors["e"].scalar_type(), at::kLong);
}

TEST(SafetensorsRead, ZeroCopyAndCopyFallback) {
  // Header padded to 112 bytes so the data section starts at 120 (a multiple of 8): the U8 at 0
  // is aligned, the F32 at 1 is not and must be copied. 1.5f = 0x3fc00000.
  std::string header = R"({"u":)" + entry_json("U8", "[1]", 0, 1) + R"(,"f":)" +
                       entry_json("F32", "[1]", 1, 5) + "}" + std::string(6, ' ');
  ASSERT_EQ((8 + header.size()) % 8, 0u);
  std::string bytes = file_bytes(header, std::string("\x07\0\0\xc0\x3f", 5));
  std::string path = write_bytes(bytes);
  SafetensorsFile file = SafetensorsFile::open(path);
  EXPECT_TRUE(file.is_zero_copy("u"));
  EXPECT_FALSE(file.is_zero_copy("f"));
  at::Tensor u = file.get("u");
  at::Tensor f = file.get("f");
  EXPECT_EQ(u.item<uint8_t>(), 7);
  EXPECT_EQ(f.item<float>(), 1.5f);
  // The zero-copy tensor views the mapping (two gets share memory); the copy does not.
  EXPECT_EQ(file.get("u").data_ptr(), u.data_ptr());
  EXPECT_NE(file.get("f").data_ptr(), f.data_ptr());
  // Writing to either never reaches the file (private mapping).
  u.fill_(9);
  f.fill_(4.0f);
  EXPECT_EQ(sg::util::read_file(path), bytes);
}

TEST(SafetensorsRead, ZeroCopyTensorOutlivesTheFileObject) {
  std::string header = R"({"f":)" + entry_json("F32", "[2]", 0, 8) + "}";
  header.append((8 - (8 + header.size()) % 8) % 8, ' ');
  std::string path = write_bytes(file_bytes(header, std::string("\0\0\xc0\x3f\0\0\x20\xc0", 8)));
  at::Tensor f;
  {
    SafetensorsFile file = SafetensorsFile::open(path);
    ASSERT_TRUE(file.is_zero_copy("f"));
    f = file.get("f");
  }
  std::filesystem::remove(path);
  EXPECT_EQ(f[0].item<float>(), 1.5f);
  EXPECT_EQ(f[1].item<float>(), -2.5f);
}

TEST(SafetensorsRead, ConcurrentGetsFromOneFile) {
  // Four threads read every tensor of one file at once; each gets the values written.
  StateDict tensors;
  for (int i = 0; i < 8; ++i) tensors.insert("t" + std::to_string(i), at::full({64}, i, at::kInt));
  std::string path = sg::util::join_path(sg::test::temp_dir("sg-st"), "mt.safetensors");
  sg::io::save_safetensors(path, tensors);
  SafetensorsFile file = SafetensorsFile::open(path);
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int round = 0; round < 50; ++round) {
        for (int i = 0; i < 8; ++i) {
          at::Tensor got = file.get("t" + std::to_string(i));
          if (got.min().item<int>() != i || got.max().item<int>() != i) ++wrong;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(wrong.load(), 0);
}

// ---- writing ----

StateDict every_dtype(uint64_t seed) {
  at::manual_seed(seed);
  StateDict t;
  t.insert("bool.mask", at::randint(0, 2, {7}).to(at::kBool));
  t.insert("u8.odd", at::randint(0, 256, {3}).to(at::kByte));
  t.insert("f32.cube", at::randn({2, 3, 4}));
  t.insert("f16.row", at::randn({1, 5}).to(at::kHalf));
  t.insert("i8.vec", at::randint(-128, 128, {5}).to(at::kChar));
  t.insert("f64.mat", at::randn({3, 3}, at::kDouble));
  t.insert("bf16.vec", at::randn({9}).to(at::kBFloat16));
  t.insert("i16.vec", at::randint(-32768, 32768, {3}).to(at::kShort));
  t.insert("i32.mat", at::randint(-1000000, 1000000, {2, 2}).to(at::kInt));
  t.insert("i64.scalar", at::scalar_tensor(static_cast<int64_t>(-1234567890123LL), at::kLong));
  t.insert("f32.empty", at::zeros({0, 4}));
  t.insert("u8.empty", at::zeros({0}, at::kByte));
  return t;
}

TEST(SafetensorsWrite, RoundTripEveryDtypeByteExact) {
  StateDict tensors = every_dtype(7);
  Metadata metadata{{"format", "pt"}, {"note", "h\xc3\xa9llo \"q\""}, {"empty", ""}};
  std::string path = sg::util::join_path(sg::test::temp_dir("sg-st"), "all.safetensors");
  sg::io::save_safetensors(path, tensors, metadata);
  EXPECT_EQ(sg::io::serialize_safetensors(tensors, metadata), sg::util::read_file(path));

  SafetensorsFile file = SafetensorsFile::open(path);
  EXPECT_EQ(file.metadata(), metadata);
  ASSERT_EQ(file.entries().size(), tensors.size());
  for (const auto& item : tensors) {
    SCOPED_TRACE(item.key());
    at::Tensor loaded = file.get(item.key());
    EXPECT_EQ(loaded.scalar_type(), item.value().scalar_type());
    EXPECT_EQ(loaded.sizes().vec(), item.value().sizes().vec());
    EXPECT_EQ(raw_bytes(loaded), raw_bytes(item.value()));
    // The writer's layout keeps every non-empty tensor aligned: all zero-copy.
    EXPECT_EQ(file.is_zero_copy(item.key()), item.value().numel() > 0);
  }
}

// The written layout, checked by parsing the bytes independently of the reader.
TEST(SafetensorsWrite, LayoutIsAlignedAndCoversTheDataExactly) {
  const std::map<std::string, uint64_t> element_size{{"F64", 8}, {"I64", 8}, {"F32", 4},
                                                     {"I32", 4}, {"F16", 2}, {"BF16", 2},
                                                     {"I16", 2}, {"I8", 1},  {"U8", 1},
                                                     {"BOOL", 1}};
  std::string bytes = sg::io::serialize_safetensors(every_dtype(3));
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = header_size * 256 + static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ((8 + header_size) % 8, 0u);
  std::string header_text = bytes.substr(8, header_size);
  nlohmann::ordered_json header = nlohmann::ordered_json::parse(header_text);
  // Padding is spaces after the JSON text.
  std::string compact = header.dump();
  EXPECT_EQ(header_text, compact + std::string(header_size - compact.size(), ' '));
  uint64_t position = 0, previous_size = 8;
  for (auto it = header.begin(); it != header.end(); ++it) {
    SCOPED_TRACE(it.key());
    uint64_t size = element_size.at(it.value()["dtype"].get<std::string>());
    uint64_t begin = it.value()["data_offsets"][0], end = it.value()["data_offsets"][1];
    EXPECT_EQ(begin, position);  // header order is data order, no holes
    EXPECT_EQ((8 + header_size + begin) % size, 0u);
    EXPECT_LE(size, previous_size);  // element size descending
    position = end;
    previous_size = size;
  }
  EXPECT_EQ(8 + header_size + position, bytes.size());
}

TEST(SafetensorsWrite, ExactBytesOfASmallFile) {
  StateDict tensors;
  tensors.insert("b", at::tensor({1, 2}, at::kByte));
  tensors.insert("a", at::tensor({1.0}, at::kDouble));
  // The 8-byte tensor goes first; the header is 132 bytes + 4 spaces = 136 (0x88).
  std::string expected =
      std::string("\x88\0\0\0\0\0\0\0", 8) +
      R"({"__metadata__":{"k":"v"},"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"U8","shape":[2],"data_offsets":[8,10]}})" +
      "    " + std::string("\0\0\0\0\0\0\xf0\x3f\x01\x02", 10);
  EXPECT_EQ(sg::io::serialize_safetensors(tensors, {{"k", "v"}}), expected);
}

TEST(SafetensorsWrite, NonContiguousAndViewsAreWrittenAsTheirValues) {
  at::Tensor base = at::arange(24, at::kFloat).reshape({4, 6});
  StateDict tensors;
  tensors.insert("transposed", base.t());
  tensors.insert("sliced", base.slice(1, 2, 5));  // storage offset + strides
  tensors.insert("expanded", at::arange(3, at::kInt).expand({2, 3}));
  tensors.insert("sparse", base.to_sparse());
  tensors.insert("negated", at::_neg_view(base));  // contiguous() keeps the lazy negation bit
  std::string path = sg::util::join_path(sg::test::temp_dir("sg-st"), "views.safetensors");
  sg::io::save_safetensors(path, tensors);
  StateDict loaded = sg::io::load_safetensors(path);
  EXPECT_TRUE(at::equal(loaded["transposed"], base.t().contiguous()));
  EXPECT_TRUE(at::equal(loaded["sliced"], base.slice(1, 2, 5).contiguous()));
  EXPECT_TRUE(at::equal(loaded["expanded"], at::tensor({0, 1, 2, 0, 1, 2}, at::kInt).view({2, 3})));
  EXPECT_TRUE(at::equal(loaded["sparse"], base));
  EXPECT_TRUE(at::equal(loaded["negated"], -base));
}

TEST(SafetensorsWrite, RejectsBadInputsAndLeavesNoFile) {
  std::string dir = sg::test::temp_dir("sg-st");
  std::string path = sg::util::join_path(dir, "bad.safetensors");
  auto expect_rejected = [&](const std::string& name, const at::Tensor& tensor,
                             const std::string& keyword) {
    StateDict tensors;
    tensors.insert("ok", at::zeros({2}));
    tensors.insert(name, tensor);
    try {
      sg::io::save_safetensors(path, tensors);
      ADD_FAILURE() << "accepted " << keyword;
    } catch (const sg::Error& e) {
      std::string message = e.what();
      EXPECT_NE(message.find(path), std::string::npos) << message;
      EXPECT_NE(message.find(keyword), std::string::npos) << message;
    }
    EXPECT_FALSE(sg::util::file_exists(path));
    EXPECT_TRUE(std::filesystem::is_empty(dir));  // no temp file left either
  };
  expect_rejected("", at::zeros({1}), "empty name");
  expect_rejected("__metadata__", at::zeros({1}), "reserves");
  expect_rejected("c", at::zeros({2}, at::kComplexFloat), "cannot hold");
  expect_rejected("u", at::Tensor(), "undefined");
  EXPECT_THROW(sg::io::safetensors_dtype_name(at::kComplexDouble), sg::Error);
  EXPECT_THROW(sg::io::scalar_type_from_safetensors("F8_E4M3"), sg::Error);
  // A StateDict cannot even hold a duplicate name.
  StateDict tensors;
  tensors.insert("a", at::zeros({1}));
  EXPECT_ANY_THROW(tensors.insert("a", at::zeros({1})));
}

TEST(SafetensorsWrite, MetadataOnlyAndEmptyFiles) {
  std::string dir = sg::test::temp_dir("sg-st");
  std::string path = sg::util::join_path(dir, "m.safetensors");
  Metadata metadata{{"format", "skillgraft.skill"}, {"metrics", R"({"acc": 0.5})"}};
  sg::io::save_safetensors(path, StateDict(), metadata);
  Metadata loaded;
  EXPECT_EQ(sg::io::load_safetensors(path, &loaded).size(), 0u);
  EXPECT_EQ(loaded, metadata);
  EXPECT_EQ(sg::io::serialize_safetensors(StateDict()), le64(8) + "{}      ");
}

TEST(SafetensorsWrite, NamesMustBeValidUtf8) {
  StateDict tensors;
  tensors.insert("bad\xff", at::zeros({1}));
  EXPECT_THROW(sg::io::serialize_safetensors(tensors), sg::Error);
}

TEST(SafetensorsWrite, RefusesAHeaderReadersWouldReject) {
  Metadata metadata{{"blob", std::string(100ull * 1000 * 1000, 'x')}};
  try {
    sg::io::serialize_safetensors(StateDict(), metadata);
    FAIL() << "expected sg::Error";
  } catch (const sg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("limit"), std::string::npos) << e.what();
  }
}

// ---- sharded directories ----

StateDict five_tensors() {
  StateDict tensors;
  for (int i = 0; i < 5; ++i) {
    tensors.insert("layer." + std::to_string(i) + ".weight", at::full({4}, static_cast<float>(i)));
  }
  return tensors;
}

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(SafetensorsDir, ShardedSaveAndLoad) {
  std::string dir = sg::test::temp_dir("sg-st");
  // 5 tensors x 16 bytes, at most 40 bytes a shard: greedy gives [0,1] [2,3] [4].
  sg::io::save_safetensors_dir(dir, five_tensors(), {{"format", "pt"}}, 40);
  EXPECT_EQ(files_in(dir), std::vector<std::string>({"model-00001-of-00003.safetensors",
                                                     "model-00002-of-00003.safetensors",
                                                     "model-00003-of-00003.safetensors",
                                                     "model.safetensors.index.json"}));
  nlohmann::json index =
      nlohmann::json::parse(sg::util::read_file(sg::util::join_path(dir, "model.safetensors.index.json")));
  EXPECT_EQ(index["metadata"]["total_size"], 80);
  EXPECT_EQ(index["weight_map"], nlohmann::json({{"layer.0.weight", "model-00001-of-00003.safetensors"},
                                                 {"layer.1.weight", "model-00001-of-00003.safetensors"},
                                                 {"layer.2.weight", "model-00002-of-00003.safetensors"},
                                                 {"layer.3.weight", "model-00002-of-00003.safetensors"},
                                                 {"layer.4.weight", "model-00003-of-00003.safetensors"}}));
  Metadata metadata;
  StateDict loaded = sg::io::load_safetensors_dir(dir, &metadata);
  EXPECT_EQ(metadata, (Metadata{{"format", "pt"}}));
  ASSERT_EQ(loaded.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    std::string name = "layer." + std::to_string(i) + ".weight";
    EXPECT_EQ(loaded.keys()[i], name);
    EXPECT_TRUE(at::equal(loaded[name], at::full({4}, static_cast<float>(i))));
  }
}

TEST(SafetensorsDir, SingleFileWhenUnderTheLimitAndStaleFilesRemoved) {
  std::string dir = sg::test::temp_dir("sg-st");
  sg::util::write_file_atomic(sg::util::join_path(dir, "config.json"), "{}");
  sg::io::save_safetensors_dir(dir, five_tensors(), {}, 40);
  sg::io::save_safetensors_dir(dir, five_tensors(), {}, 80);  // fits: one file
  EXPECT_EQ(files_in(dir), std::vector<std::string>({"config.json", "model.safetensors"}));
  EXPECT_EQ(sg::io::load_safetensors_dir(dir).size(), 5u);
  sg::io::save_safetensors_dir(dir, five_tensors(), {}, 48);  // shards again: [0,1,2] [3,4]
  EXPECT_EQ(files_in(dir), std::vector<std::string>({"config.json",
                                                     "model-00001-of-00002.safetensors",
                                                     "model-00002-of-00002.safetensors",
                                                     "model.safetensors.index.json"}));
  EXPECT_EQ(sg::io::load_safetensors_dir(dir).size(), 5u);
}

// Passes if load_safetensors_dir throws sg::Error containing every keyword.
testing::AssertionResult dir_rejected(const std::string& dir,
                                      const std::vector<std::string>& keywords) {
  try {
    sg::io::load_safetensors_dir(dir);
  } catch (const sg::Error& e) {
    std::string message = e.what();
    for (const std::string& keyword : keywords) {
      if (message.find(keyword) == std::string::npos)
        return testing::AssertionFailure() << "message lacks '" << keyword << "': " << message;
    }
    return testing::AssertionSuccess();
  }
  return testing::AssertionFailure() << "accepted a bad directory";
}

struct ShardedDir {
  std::string dir = sg::test::temp_dir("sg-st");
  std::string index_path = sg::util::join_path(dir, "model.safetensors.index.json");
  ShardedDir() { sg::io::save_safetensors_dir(dir, five_tensors(), {}, 40); }
  void write_index(const std::string& text) const { sg::util::write_file_atomic(index_path, text); }
  std::string shard(int i) const {
    return sg::util::join_path(dir, "model-0000" + std::to_string(i) + "-of-00003.safetensors");
  }
};

TEST(SafetensorsDir, NeitherFileNamesTheDirectoryAndBothNames) {
  std::string dir = sg::test::temp_dir("sg-st");
  EXPECT_TRUE(dir_rejected(dir, {dir, "model.safetensors", "model.safetensors.index.json"}));
}

TEST(SafetensorsDir, IndexNotJson) {
  ShardedDir d;
  d.write_index("{\"weight_map\": ");
  EXPECT_TRUE(dir_rejected(d.dir, {d.index_path, "not valid JSON"}));
  d.write_index(R"({"metadata": {}})");
  EXPECT_TRUE(dir_rejected(d.dir, {d.index_path, "no \"weight_map\""}));
}

TEST(SafetensorsDir, MissingShard) {
  ShardedDir d;
  std::filesystem::remove(d.shard(2));
  EXPECT_TRUE(dir_rejected(d.dir, {d.index_path, d.shard(2), "does not exist"}));
}

TEST(SafetensorsDir, ListedTensorNotInItsShard) {
  ShardedDir d;
  StateDict shard;
  shard.insert("layer.2.weight", at::zeros({4}));  // layer.3 is gone
  sg::io::save_safetensors(d.shard(2), shard);
  EXPECT_TRUE(dir_rejected(d.dir, {d.index_path, "'layer.3.weight'", "does not hold"}));
}

TEST(SafetensorsDir, TensorInTwoShards) {
  ShardedDir d;
  StateDict shard;
  shard.insert("layer.4.weight", at::zeros({4}));
  shard.insert("layer.0.weight", at::zeros({4}));  // also in shard 1
  sg::io::save_safetensors(d.shard(3), shard);
  EXPECT_TRUE(dir_rejected(d.dir, {d.dir, "'layer.0.weight'", "two shards"}));
}

TEST(SafetensorsDir, ShardTensorMissingFromIndex) {
  ShardedDir d;
  StateDict shard;
  shard.insert("layer.4.weight", at::zeros({4}));
  shard.insert("extra", at::zeros({4}));
  sg::io::save_safetensors(d.shard(3), shard);
  EXPECT_TRUE(dir_rejected(d.dir, {d.index_path, "'extra'", "does not list"}));
}

TEST(SafetensorsDir, ShardNameMustBeAPlainFileName) {
  ShardedDir d;
  d.write_index(R"({"weight_map": {"a": "../model-00001-of-00003.safetensors"}})");
  EXPECT_TRUE(dir_rejected(d.dir, {d.index_path, "not a plain file name"}));
}

TEST(SafetensorsDir, DamagedShardNamesTheShard) {
  ShardedDir d;
  sg::util::write_file_atomic(d.shard(1), "junk");
  EXPECT_TRUE(dir_rejected(d.dir, {d.shard(1), "too short"}));
}

// ---- mutation fuzz ----

// Every mutant of a valid file either loads (and its values can be read) or throws sg::Error.
TEST(SafetensorsFuzz, MutantsLoadOrThrowSgError) {
  StateDict tensors = every_dtype(11);
  const std::string valid = sg::io::serialize_safetensors(tensors, {{"format", "pt"}});
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = header_size * 256 + static_cast<uint8_t>(valid[i]);
  const uint64_t header_end = 8 + header_size;
  std::string path = sg::util::join_path(sg::test::temp_dir("sg-st"), "fuzz.safetensors");
  std::mt19937_64 rng(20240601);
  auto uniform = [&](uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng); };
  int loaded = 0, rejected = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::string bytes = valid;
    switch (uniform(5)) {
      case 0:  // flip bits anywhere
        for (uint64_t k = 0, n = 1 + uniform(3); k < n; ++k)
          bytes[uniform(bytes.size())] ^= static_cast<char>(1 << uniform(8));
        break;
      case 1:  // random byte in the length or header, where it matters most
        bytes[uniform(header_end)] = static_cast<char>(uniform(256));
        break;
      case 2: {  // replace a digit in the header with another digit (offsets, shapes)
        uint64_t at = 8 + uniform(header_end - 8);
        while (at < header_end && !std::isdigit(static_cast<unsigned char>(bytes[at]))) ++at;
        if (at < header_end) bytes[at] = static_cast<char>('0' + uniform(10));
        break;
      }
      case 3:  // truncate
        bytes.resize(uniform(bytes.size()));
        break;
      default:  // append junk
        bytes += std::string(1 + uniform(16), static_cast<char>(uniform(256)));
        break;
    }
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
    try {
      SafetensorsFile file = SafetensorsFile::open(path);
      for (const auto& entry : file.entries()) {
        at::Tensor t = file.get(entry.name);
        (void)t.to(at::kDouble).sum().item<double>();  // touch every element
      }
      ++loaded;
    } catch (const sg::Error& e) {
      ++rejected;
      ASSERT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    } catch (const std::exception& e) {
      FAIL() << "trial " << trial << ": not an sg::Error: " << e.what();
    }
  }
  std::cout << "fuzz: " << loaded << " mutants loaded, " << rejected << " rejected\n";
  EXPECT_GT(loaded, 0);
  EXPECT_GT(rejected, 0);
}

}  // namespace
