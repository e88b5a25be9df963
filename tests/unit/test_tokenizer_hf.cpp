// Tokenizer unit tests for HF tokenizer.json files of the Llama family: Llama-2 style (BPE with
// byte_fallback, loaded as sentencepiece_bpe) and Llama-3 style (a Split regex of its own before
// ByteLevel, loaded as gpt2_bpe). Tiny hand-made files, expected ids worked out by hand from the
// merges; round trips, save/load, and bad files. GPT-2's own tokenizer.json: test_tokenizer.cpp.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "io/tokenizer.h"
#include "test_env.h"
#include "../reference/tokenizer_test_util.h"
#include "util/error.h"
#include "util/file.h"

namespace {

using sg::io::Tokenizer;
using sg::util::join_path;
using sg::util::read_file;
using sg::util::write_file_atomic;
using Ids = std::vector<int64_t>;
namespace tt = sg::test::tokenizer;
using tt::expect_error;

// decode(encode(s)) == s, and `loaded` (a saved and reloaded `tok`) encodes s the same, for the
// given texts and 500 random ones.
void expect_round_trip_and_same_ids(const Tokenizer& tok, const Tokenizer& loaded,
                                    std::vector<std::string> texts) {
  std::mt19937 rng(23);
  for (int i = 0; i < 500; ++i) texts.push_back(tt::random_text(rng, 40));
  for (const auto& text : texts) {
    Ids ids = tok.encode(text);
    ASSERT_EQ(tok.decode(ids), text) << tt::printable(text);
    ASSERT_EQ(loaded.encode(text), ids) << tt::printable(text);
  }
}

// ---------------------------------------------------------------------------------------------
// HF tokenizer.json, Llama-2 style (BPE with byte_fallback), expected ids worked out by hand

const std::string kSpm = "\xE2\x96\x81";  // U+2581, SentencePiece's space

enum class LlamaForm { kPrependReplace, kMetaspace, kReplaceOnly };

// <unk> <s> </s>, <0x00>..<0xFF> (3..258), then ▁ a b c ▁a ab ▁ab bc (259..266). Merge ranks:
// a+b 0, ▁+a 1, ▁+ab 2, b+c 3: "ab" goes before "▁a", so "▁ab" wins over "▁a" "b".
nlohmann::json tiny_llama_tokenizer_json(LlamaForm form, bool pair_merges) {
  nlohmann::json vocab = nlohmann::json::object();
  vocab["<unk>"] = 0;
  vocab["<s>"] = 1;
  vocab["</s>"] = 2;
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  const std::vector<std::string> pieces = {kSpm, "a", "b", "c", kSpm + "a", "ab", kSpm + "ab", "bc"};
  for (size_t i = 0; i < pieces.size(); ++i) vocab[pieces[i]] = 259 + static_cast<int>(i);
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"a", "b"}, {kSpm, "a"}, {kSpm, "ab"}, {"b", "c"}};
  nlohmann::json merge_list = tt::merges_json(merges, pair_merges);
  nlohmann::json root;
  root["version"] = "1.0";
  root["added_tokens"] = nlohmann::json::array();
  for (int id = 0; id < 3; ++id) {
    const char* names[] = {"<unk>", "<s>", "</s>"};
    root["added_tokens"].push_back({{"id", id}, {"content", names[id]}, {"special", true}});
  }
  nlohmann::json replace = {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpm}};
  root["normalizer"] = nullptr;
  root["pre_tokenizer"] = nullptr;
  if (form == LlamaForm::kPrependReplace) {
    root["normalizer"] = {{"type", "Sequence"},
                          {"normalizers", {{{"type", "Prepend"}, {"prepend", kSpm}}, replace}}};
  } else if (form == LlamaForm::kReplaceOnly) {
    root["normalizer"] = {{"type", "Sequence"}, {"normalizers", {replace}}};
  } else {
    root["pre_tokenizer"] = {
        {"type", "Metaspace"}, {"replacement", kSpm}, {"prepend_scheme", "first"}, {"split", false}};
  }
  root["decoder"] = {{"type", "Sequence"},
                     {"decoders",
                      {{{"type", "Replace"}, {"pattern", {{"String", kSpm}}}, {"content", " "}},
                       {{"type", "ByteFallback"}},
                       {{"type", "Fuse"}},
                       {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  root["model"] = {{"type", "BPE"},    {"dropout", nullptr},    {"unk_token", "<unk>"},
                   {"fuse_unk", true}, {"byte_fallback", true}, {"ignore_merges", false},
                   {"vocab", vocab},   {"merges", merge_list}};
  return root;
}

std::unique_ptr<Tokenizer> load_tiny_llama(LlamaForm form, bool pair_merges = false) {
  std::string dir = sg::test::temp_dir("sg-tok-llama");
  write_file_atomic(join_path(dir, "tokenizer.json"), tiny_llama_tokenizer_json(form, pair_merges).dump());
  return sg::io::load_tokenizer(dir);
}

TEST(HfLlamaTokenizer, TinyVocabularyHandComputed) {
  for (bool pair_merges : {false, true}) {
    for (LlamaForm form : {LlamaForm::kPrependReplace, LlamaForm::kMetaspace}) {
      auto tok = load_tiny_llama(form, pair_merges);
      EXPECT_EQ(tok->kind(), "sentencepiece_bpe");
      EXPECT_EQ(tok->vocab_size(), 267);
      EXPECT_EQ(tok->bos_id(), 1);
      EXPECT_EQ(tok->eos_id(), 2);
      EXPECT_EQ(tok->encode(""), Ids{});
      // ▁ab▁c: a+b (rank 0), then ▁+ab (rank 2); "▁ c" is no merge.
      EXPECT_EQ(tok->encode("ab c"), (Ids{265, 259, 262}));
      // ▁abc: a+b, then ▁+ab; "ab c" is no merge, and b+c (rank 3) lost its "b".
      EXPECT_EQ(tok->encode("abc"), (Ids{265, 262}));
      EXPECT_EQ(tok->encode("bc"), (Ids{259, 266}));
      // é is no piece: its bytes C3 A9 as <0xC3> <0xA9>.
      EXPECT_EQ(tok->encode("a\xC3\xA9"), (Ids{263, 3 + 0xC3, 3 + 0xA9}));
      EXPECT_EQ(tok->encode("\xFF"), (Ids{259, 3 + 0xFF}));
      // Control tokens in the text are text: < s > are bytes.
      EXPECT_EQ(tok->encode("<s>"), (Ids{259, 3 + '<', 3 + 's', 3 + '>'}));
      EXPECT_EQ(tok->decode({1, 265, 259, 262, 2}), "ab c");
      EXPECT_EQ(tok->decode({263, 3 + 0xC3, 3 + 0xA9}), "a\xC3\xA9");
    }
  }
  // Without Prepend, no space goes in front: a+b, then nothing.
  auto tok = load_tiny_llama(LlamaForm::kReplaceOnly);
  EXPECT_EQ(tok->encode("ab c"), (Ids{264, 259, 262}));
  EXPECT_EQ(tok->decode({264, 259, 262}), "ab c");
}

TEST(HfLlamaTokenizer, RoundTripAndSaveLoad) {
  auto tok = load_tiny_llama(LlamaForm::kPrependReplace);
  std::string saved = sg::test::temp_dir("sg-tok-llama-saved");
  tok->save(saved);
  nlohmann::json file = nlohmann::json::parse(read_file(join_path(saved, "skillgraft_tokenizer.json")));
  EXPECT_EQ(file["version"], 2);
  EXPECT_EQ(file["merges"][1], nlohmann::json::array({kSpm, "a"}));
  auto loaded = sg::io::load_tokenizer(saved);
  EXPECT_EQ(loaded->kind(), "sentencepiece_bpe");
  EXPECT_EQ(loaded->bos_id(), 1);
  expect_round_trip_and_same_ids(*tok, *loaded, {" ab", "  a b  c ", "abcabc ab\nc", "bcbc"});
  // Saved again, the file is the same.
  std::string again = sg::test::temp_dir("sg-tok-llama-saved");
  loaded->save(again);
  EXPECT_EQ(read_file(join_path(again, "skillgraft_tokenizer.json")),
            read_file(join_path(saved, "skillgraft_tokenizer.json")));
}

// ---------------------------------------------------------------------------------------------
// HF tokenizer.json, Llama-3 style (Split with its own regex, then ByteLevel without), by hand

// Llama-3's pattern: digits in groups of up to 3, one non-letter glued to the letters after it.
const std::string kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|)"
    R"(\s*[\r\n]+|\s+(?!\S)|\s+)";

// Byte b is id b; then 12 123 1234 45 !h !hi Ġh Ġhi (256..263), Ġhello (264, no merge makes it),
// added <|begin_of_text|> 265 and <|end_of_text|> 266. Merges in that order.
nlohmann::json tiny_llama3_tokenizer_json(bool split_regex, bool ignore_merges) {
  const std::string G = tt::byte_char(' ');
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"1", "2"}, {"12", "3"}, {"123", "4"}, {"4", "5"}, {"!", "h"}, {"!h", "i"}, {G, "h"}, {G + "h", "i"}};
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[tt::byte_char(b)] = b;
  int id = 256;
  nlohmann::json merge_list = nlohmann::json::array();
  for (const auto& [left, right] : merges) {
    vocab[left + right] = id++;
    merge_list.push_back({left, right});
  }
  vocab[G + "hello"] = id++;
  nlohmann::json root = tt::tiny_gpt2_tokenizer_json(true);
  root["added_tokens"] = {{{"id", 265}, {"content", "<|begin_of_text|>"}, {"special", true}},
                          {{"id", 266}, {"content", "<|end_of_text|>"}, {"special", true}}};
  if (split_regex) {
    root["pre_tokenizer"] = {{"type", "Sequence"},
                             {"pretokenizers",
                              {{{"type", "Split"},
                                {"pattern", {{"Regex", kLlama3Pattern}}},
                                {"behavior", "Isolated"},
                                {"invert", false}},
                               {{"type", "ByteLevel"},
                                {"add_prefix_space", false},
                                {"trim_offsets", true},
                                {"use_regex", false}}}}};
  }
  root["model"]["vocab"] = vocab;
  root["model"]["merges"] = merge_list;
  root["model"]["ignore_merges"] = ignore_merges;
  return root;
}

std::unique_ptr<Tokenizer> load_tiny_llama3(bool split_regex, bool ignore_merges) {
  std::string dir = sg::test::temp_dir("sg-tok-llama3");
  write_file_atomic(join_path(dir, "tokenizer.json"),
                    tiny_llama3_tokenizer_json(split_regex, ignore_merges).dump());
  return sg::io::load_tokenizer(dir);
}

TEST(HfLlama3Tokenizer, TinyVocabularyHandComputed) {
  auto tok = load_tiny_llama3(true, true);
  EXPECT_EQ(tok->kind(), "gpt2_bpe");
  EXPECT_EQ(tok->vocab_size(), 267);
  EXPECT_EQ(tok->bos_id(), 265);
  EXPECT_EQ(tok->eos_id(), 266);
  // "123" "45": digits in threes, so 1234 never forms.
  EXPECT_EQ(tok->encode("12345"), (Ids{257, 259}));
  EXPECT_EQ(tok->encode("1234"), (Ids{257, '4'}));
  // "!hi" is one word: ! + h, then !h + i.
  EXPECT_EQ(tok->encode("!hi"), (Ids{261}));
  EXPECT_EQ(tok->encode(" hi"), (Ids{263}));
  // ignore_merges: " hello" is a token as a whole; "hello" is not, and has no merges.
  EXPECT_EQ(tok->encode(" hello"), (Ids{264}));
  EXPECT_EQ(tok->encode("hello"), (Ids{'h', 'e', 'l', 'l', 'o'}));
  EXPECT_EQ(tok->decode({265, 257, 259, 264, 266}), "<|begin_of_text|>12345 hello<|end_of_text|>");

  // Without ignore_merges, " hello" is what the merges make of it.
  EXPECT_EQ(load_tiny_llama3(true, false)->encode(" hello"), (Ids{262, 'e', 'l', 'l', 'o'}));
  // The same vocabulary with GPT-2's regex: "12345" and "!hi" are split differently.
  auto gpt2_regex = load_tiny_llama3(false, false);
  EXPECT_EQ(gpt2_regex->encode("12345"), (Ids{258, '5'}));
  EXPECT_EQ(gpt2_regex->encode("!hi"), (Ids{'!', 'h', 'i'}));
}

TEST(HfLlama3Tokenizer, RoundTripAndSaveLoad) {
  for (bool split_regex : {true, false}) {
    std::string dir = sg::test::temp_dir("sg-tok-llama3");
    nlohmann::json root = tiny_llama3_tokenizer_json(split_regex, true);
    // An added token that spells the placeholder save() uses for model.vocab.
    root["added_tokens"].push_back({{"id", 267}, {"content", "@vocab@"}, {"special", true}});
    write_file_atomic(join_path(dir, "tokenizer.json"), root.dump());
    auto tok = sg::io::load_tokenizer(dir);
    std::string saved = sg::test::temp_dir("sg-tok-llama3-saved");
    tok->save(saved);
    // vocab.json + merges.txt would lose the regex and ignore_merges.
    EXPECT_TRUE(sg::util::file_exists(join_path(saved, "tokenizer.json")));
    EXPECT_FALSE(sg::util::file_exists(join_path(saved, "vocab.json")));
    auto loaded = sg::io::load_tokenizer(saved);
    EXPECT_EQ(loaded->vocab_size(), 268);
    EXPECT_EQ(loaded->decode({267}), "@vocab@");
    EXPECT_EQ(loaded->bos_id(), 265);
    EXPECT_EQ(loaded->eos_id(), 266);
    EXPECT_EQ(loaded->decode({265}), "<|begin_of_text|>");
    expect_round_trip_and_same_ids(*tok, *loaded,
                                   {"12345 !hi hello hi", " hello  1234567\n\n!!hi", "IT'S it's"});
    std::string again = sg::test::temp_dir("sg-tok-llama3-saved");
    loaded->save(again);
    EXPECT_EQ(read_file(join_path(again, "tokenizer.json")), read_file(join_path(saved, "tokenizer.json")));
  }
}

// ---------------------------------------------------------------------------------------------
// Bad files: each is an sg::Error whose message names the file and says what is wrong

TEST(TokenizerBadFiles, HfLlamaTokenizerJson) {
  const std::string dir = sg::test::temp_dir("sg-tok-bad");
  const std::string path = join_path(dir, "tokenizer.json");
  auto load = [&] { sg::io::load_hf_tokenizer_json(path); };
  auto expect_edit_error = [&](const std::function<void(nlohmann::json&)>& edit,
                               std::vector<std::string> fragments, LlamaForm form) {
    nlohmann::json root = tiny_llama_tokenizer_json(form, false);
    edit(root);
    write_file_atomic(path, root.dump());
    fragments.insert(fragments.begin(), path);
    expect_error(load, fragments);
  };
  const auto metaspace = LlamaForm::kMetaspace;
  const auto prepend = LlamaForm::kPrependReplace;
  expect_edit_error([](auto& root) { root["pre_tokenizer"]["split"] = true; }, {"\"split\": true"},
                    metaspace);
  // Fields of the wrong type are errors naming the file too, never a JSON library exception.
  expect_edit_error([](auto& root) { root["pre_tokenizer"]["split"] = "no"; }, {"\"split\": true"},
                    metaspace);
  expect_edit_error([](auto& root) { root["pre_tokenizer"]["replacement"] = 7; }, {"replacement"}, metaspace);
  expect_edit_error(
      [](auto& root) {
        root["pre_tokenizer"].erase("prepend_scheme");
        root["pre_tokenizer"]["add_prefix_space"] = "yes";
      },
      {"add_prefix_space must be true or false"}, metaspace);
  expect_edit_error([](auto& root) { root["normalizer"]["normalizers"][0]["prepend"] = 1; },
                    {"Prepend adds 1"}, prepend);
  expect_edit_error([](auto& root) { root["pre_tokenizer"]["prepend_scheme"] = "sometimes"; },
                    {"prepend_scheme is \"sometimes\""}, metaspace);
  expect_edit_error([](auto& root) { root["pre_tokenizer"]["replacement"] = "_"; }, {"replacement"},
                    metaspace);
  expect_edit_error(
      [](auto& root) {
        root["normalizer"] = {{"type", "NFC"}};
      },
      {"the normalizer is"}, prepend);
  expect_edit_error([](auto& root) { root["normalizer"]["normalizers"][0]["prepend"] = " "; },
                    {"Prepend adds \" \""}, prepend);
  expect_edit_error(
      [](auto& root) {
        root["pre_tokenizer"] = {{"type", "Metaspace"}};
      },
      {"both a normalizer and a pre_tokenizer"}, prepend);
  expect_edit_error([](auto& root) { root["model"]["merges"][3] = "b d"; },
                    {"merge 3", "\"d\" is not a text piece"}, prepend);
  expect_edit_error([](auto& root) { root["model"]["merges"][3] = "<0x41> a"; },
                    {"merge 3", "\"<0x41>\" is not a text piece"}, prepend);
  expect_edit_error([](auto& root) { root["model"]["ignore_merges"] = true; }, {"ignore_merges"}, prepend);
  expect_edit_error(
      [](auto& root) {
        root["model"]["vocab"].erase("<0x41>");
        root["model"]["vocab"]["A"] = 3 + 0x41;
      },
      {"no byte-fallback piece <0x41>"}, prepend);
}

TEST(TokenizerBadFiles, HfLlama3TokenizerJson) {
  const std::string dir = sg::test::temp_dir("sg-tok-bad");
  const std::string path = join_path(dir, "tokenizer.json");
  auto load = [&] { sg::io::load_hf_tokenizer_json(path); };
  auto expect_edit_error = [&](const std::function<void(nlohmann::json&)>& edit,
                               std::vector<std::string> fragments) {
    nlohmann::json root = tiny_llama3_tokenizer_json(true, true);
    edit(root);
    write_file_atomic(path, root.dump());
    fragments.insert(fragments.begin(), path);
    expect_error(load, fragments);
  };
  expect_edit_error(
      [](auto& root) {
        root["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"String", " "}};
      },
      {"expected {\"Regex\": ...}"});
  expect_edit_error([](auto& root) { root["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(a"; },
                    {"PCRE2 cannot compile", "offset 2"});
  expect_edit_error([](auto& root) { root["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"; },
                    {"behavior \"Isolated\""});
  expect_edit_error([](auto& root) { root["pre_tokenizer"]["pretokenizers"][1]["use_regex"] = true; },
                    {"use_regex false"});
  expect_edit_error([](auto& root) { root["pre_tokenizer"]["pretokenizers"][1]["use_regex"] = "no"; },
                    {"use_regex false"});
  expect_edit_error([](auto& root) { root["pre_tokenizer"]["pretokenizers"][0]["invert"] = 1; },
                    {"invert false"});
  expect_edit_error([](auto& root) { root["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = 5; },
                    {"pattern.Regex must be a string"});
  expect_edit_error(
      [](auto& root) {
        root["pre_tokenizer"]["pretokenizers"].push_back({{"type", "Digits"}});
      },
      {"a Sequence other than [Split, ByteLevel]"});
  expect_edit_error([](auto& root) { root["normalizer"] = {{"type", "NFC"}}; }, {"has a normalizer"});
}

}  // namespace
