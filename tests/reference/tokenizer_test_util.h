// Helpers shared by the tokenizer tests: random texts (bytes and UTF-8), a tiny hand-made GPT-2
// byte-level vocabulary written as vocab.json + merges.txt or tokenizer.json, printable escapes,
// and the check that a load fails with a given message.
// Everything here is written independently of src/io (GPT-2's bytes_to_unicode included).
#pragma once

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "util/error.h"
#include "util/file.h"

namespace sg::test::tokenizer {

// The same encoding as src/io's append_utf8, kept separate on purpose: the test vocabularies and
// texts must not inherit a bug of the code under test.
inline void append_code_point(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

inline int uniform(std::mt19937& rng, int low, int high) {
  return std::uniform_int_distribution<int>(low, high)(rng);
}

// Random bytes, biased towards what tokenizers find interesting: letters, spaces, and bytes
// >= 0x80 (mostly ill-formed UTF-8, sometimes well-formed by chance).
inline std::string random_bytes(std::mt19937& rng, int max_length) {
  static const std::string ascii = "abcdefghijklmnopqrstuvwxyzTHE0123456789'.,!?-_\t\n<>|";
  std::string out;
  int length = uniform(rng, 0, max_length);
  for (int i = 0; i < length; ++i) {
    int kind = uniform(rng, 0, 99);
    if (kind < 35)
      out += ascii[uniform(rng, 0, static_cast<int>(ascii.size()) - 1)];
    else if (kind < 50)
      out += ' ';
    else
      out += static_cast<char>(uniform(rng, 0, 255));
  }
  return out;
}

// Random well-formed UTF-8 from many scripts and the odd spaces. With any_code_point, some code
// points come from anywhere in U+0000..U+10FFFF (surrogates excluded), unassigned ones included;
// without, only from long-assigned ranges, where every Unicode version agrees on the category.
inline std::string random_utf8(std::mt19937& rng, int max_code_points, bool any_code_point = true) {
  static const std::vector<std::pair<uint32_t, uint32_t>> ranges = {
      {0x20, 0x7E},        // ASCII
      {0x61, 0x7A},        // a..z, again, so that words form
      {0xA0, 0xFF},        // Latin-1
      {0x100, 0x17F},      // Latin Extended-A
      {0x300, 0x36F},      // combining marks
      {0x391, 0x3A9},      // Greek
      {0x410, 0x44F},      // Cyrillic
      {0x5D0, 0x5EA},      // Hebrew
      {0x621, 0x64A},      // Arabic letters
      {0x660, 0x669},      // Arabic-Indic digits
      {0x905, 0x939},      // Devanagari letters
      {0x93E, 0x94D},      // Devanagari signs
      {0xE01, 0xE2E},      // Thai
      {0x3041, 0x3096},    // Hiragana
      {0x4E00, 0x9FA5},    // CJK
      {0xAC00, 0xD7A3},    // Hangul
      {0xFF10, 0xFF19},    // fullwidth digits
      {0x1F300, 0x1F64F},  // emoji
  };
  static const std::vector<uint32_t> specials = {
      ' ',    ' ',    ' ',    '\t',   '\n',   '\r',   '\'',   0xA0,   0x85,   0x1680, 0x2000, 0x2009,
      0x200B, 0x200D, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000, 0xFEFF, 0x180E, 0xFE0F, 0x2581, 0x1F1FA};
  std::string out;
  int count = uniform(rng, 0, max_code_points);
  for (int i = 0; i < count; ++i) {
    int kind = uniform(rng, 0, 99);
    uint32_t cp;
    if (kind < 25) {
      cp = specials[uniform(rng, 0, static_cast<int>(specials.size()) - 1)];
    } else if (kind < 95 || !any_code_point) {
      const auto& [low, high] = ranges[uniform(rng, 0, static_cast<int>(ranges.size()) - 1)];
      cp = static_cast<uint32_t>(uniform(rng, static_cast<int>(low), static_cast<int>(high)));
    } else {
      do {
        cp = static_cast<uint32_t>(uniform(rng, 0, 0x10FFFF));
      } while (cp >= 0xD800 && cp <= 0xDFFF);
    }
    append_code_point(out, cp);
  }
  return out;
}

inline std::string random_text(std::mt19937& rng, int max_length) {
  return uniform(rng, 0, 1) ? random_bytes(rng, max_length) : random_utf8(rng, max_length / 2);
}

// The text with bytes outside printable ASCII as \xNN, for failure messages.
inline std::string printable(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte < 0x7F && byte != '\\') {
      out += c;
    } else {
      char escaped[8];
      std::snprintf(escaped, sizeof(escaped), "\\x%02X", byte);
      out += escaped;
    }
  }
  return out + "\"";
}

// Expects load() to throw sg::Error whose message contains every fragment.
inline void expect_error(const std::function<void()>& load, const std::vector<std::string>& fragments) {
  try {
    load();
    ADD_FAILURE() << "expected sg::Error containing \"" << fragments.front() << "\"";
  } catch (const sg::Error& e) {
    std::string message = e.what();
    for (const auto& fragment : fragments) {
      EXPECT_NE(message.find(fragment), std::string::npos)
          << "message: " << message << "\nmissing: " << fragment;
    }
  }
}

// ---- A tiny GPT-2 style vocabulary: byte b is id b, then 11 merges and <|endoftext|> ----

// GPT-2's bytes_to_unicode(), written from OpenAI's encoder.py.
inline std::string byte_char(int byte) {
  std::vector<int> bs;
  for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
  std::vector<int> cs = bs;
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    bool listed = false;
    for (int x : bs) listed = listed || x == b;
    if (!listed) {
      bs.push_back(b);
      cs.push_back(256 + n++);
    }
  }
  std::string out;
  for (size_t i = 0; i < bs.size(); ++i) {
    if (bs[i] == byte) append_code_point(out, static_cast<uint32_t>(cs[i]));
  }
  return out;
}

// "Ġ" is byte_char(' ').
inline std::vector<std::pair<std::string, std::string>> tiny_gpt2_merges() {
  const std::string G = byte_char(' ');
  return {{G, "t"},     {"h", "e"},     {G + "t", "he"},  {"i", "s"}, {G, "is"}, {"t", "h"},
          {"th", "is"}, {G + "t", "h"}, {G + "th", "is"}, {"'", "s"}, {"o", "o"}};
}

inline nlohmann::json tiny_gpt2_vocab() {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  int id = 256;
  for (const auto& [left, right] : tiny_gpt2_merges()) vocab[left + right] = id++;
  vocab["<|endoftext|>"] = id;  // 267
  return vocab;
}

// tokenizer.json's model.merges: ["a", "b"] pairs, or "a b" strings.
inline nlohmann::json merges_json(const std::vector<std::pair<std::string, std::string>>& merges,
                                  bool pair_merges) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& [left, right] : merges) {
    if (pair_merges)
      list.push_back({left, right});
    else
      list.push_back(left + " " + right);
  }
  return list;
}

// An HF tokenizer.json as `tokenizers` writes one for GPT-2; merges as "a b" or ["a", "b"].
inline nlohmann::json tiny_gpt2_tokenizer_json(bool pair_merges) {
  nlohmann::json merges = merges_json(tiny_gpt2_merges(), pair_merges);
  nlohmann::json root;
  root["version"] = "1.0";
  root["truncation"] = nullptr;
  root["padding"] = nullptr;
  root["added_tokens"] = nlohmann::json::array();
  root["added_tokens"].push_back({{"id", 267},
                                  {"content", "<|endoftext|>"},
                                  {"single_word", false},
                                  {"lstrip", false},
                                  {"rstrip", false},
                                  {"normalized", true},
                                  {"special", true}});
  root["normalizer"] = nullptr;
  root["pre_tokenizer"] = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  root["post_processor"] = {
      {"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}};
  root["decoder"] = {
      {"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  root["model"] = {{"type", "BPE"},
                   {"dropout", nullptr},
                   {"unk_token", nullptr},
                   {"continuing_subword_prefix", ""},
                   {"end_of_word_suffix", ""},
                   {"fuse_unk", false},
                   {"byte_fallback", false},
                   {"vocab", tiny_gpt2_vocab()},
                   {"merges", merges}};
  return root;
}

enum class Gpt2Files { kVocabAndMerges, kTokenizerJsonStringMerges, kTokenizerJsonPairMerges };

// Writes the tiny vocabulary into `dir` in the given form; returns dir.
inline std::string write_tiny_gpt2(const std::string& dir, Gpt2Files files) {
  if (files == Gpt2Files::kVocabAndMerges) {
    std::string merges = "#version: 0.2\n";
    for (const auto& [left, right] : tiny_gpt2_merges()) merges += left + " " + right + "\n";
    sg::util::write_file_atomic(sg::util::join_path(dir, "vocab.json"), tiny_gpt2_vocab().dump());
    sg::util::write_file_atomic(sg::util::join_path(dir, "merges.txt"), merges);
  } else {
    bool pairs = files == Gpt2Files::kTokenizerJsonPairMerges;
    sg::util::write_file_atomic(sg::util::join_path(dir, "tokenizer.json"),
                                tiny_gpt2_tokenizer_json(pairs).dump(2));
  }
  return dir;
}

}  // namespace sg::test::tokenizer
