// Tokenizer unit tests: hand-computed encodings on tiny vocabularies, the GPT-2 pre-tokenizer,
// round trips on random bytes, save/load, and every bad-file case. Python/JS parity checks are in
// test_tokenizer_reference.cpp.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "io/tokenizer.h"
#include "io/tokenizer_internal.h"
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

// ---------------------------------------------------------------------------------------------
// UTF-8 scanning

TEST(TokenizerUtf8, SequenceLengths) {
  using sg::io::detail::utf8_sequence_length;
  EXPECT_EQ(utf8_sequence_length("a", 0), 1u);
  EXPECT_EQ(utf8_sequence_length("\xC3\xA9", 0), 2u);          // é
  EXPECT_EQ(utf8_sequence_length("\xE2\x82\xAC", 0), 3u);      // €
  EXPECT_EQ(utf8_sequence_length("\xF0\x9F\x98\x80", 0), 4u);  // 😀
  EXPECT_EQ(utf8_sequence_length("\xF4\x8F\xBF\xBF", 0), 4u);  // U+10FFFF
  EXPECT_EQ(utf8_sequence_length("\x80", 0), 0u);              // lone continuation
  EXPECT_EQ(utf8_sequence_length("\xC0\x80", 0), 0u);          // overlong NUL
  EXPECT_EQ(utf8_sequence_length("\xC1\xBF", 0), 0u);          // overlong
  EXPECT_EQ(utf8_sequence_length("\xE0\x9F\xBF", 0), 0u);      // overlong 3-byte
  EXPECT_EQ(utf8_sequence_length("\xED\xA0\x80", 0), 0u);      // surrogate U+D800
  EXPECT_EQ(utf8_sequence_length("\xED\x9F\xBF", 0), 3u);      // U+D7FF
  EXPECT_EQ(utf8_sequence_length("\xF0\x8F\xBF\xBF", 0), 0u);  // overlong 4-byte
  EXPECT_EQ(utf8_sequence_length("\xF4\x90\x80\x80", 0), 0u);  // above U+10FFFF
  EXPECT_EQ(utf8_sequence_length("\xF5\x80\x80\x80", 0), 0u);
  EXPECT_EQ(utf8_sequence_length("\xE2\x82", 0), 0u);  // truncated
  EXPECT_EQ(utf8_sequence_length("\xE2\x82"
                                 "A",
                                 0),
            0u);
  EXPECT_EQ(utf8_sequence_length("\xFF", 0), 0u);
}

// ---------------------------------------------------------------------------------------------
// The shared BPE merge loop, on symbols "a" "b" "c" "a" "b" (ids 0, 1, 2, 0, 1)

// Pair (left id, right id) -> {priority, merged id}; ids 3.. are merged tokens.
sg::io::detail::BpePairLookup pair_table(std::vector<std::tuple<int32_t, int32_t, double, int32_t>> rules) {
  return [rules](const sg::io::detail::BpeSymbol& left, const sg::io::detail::BpeSymbol& right,
                 sg::io::detail::BpeMerge& merge) {
    for (const auto& [a, b, priority, merged] : rules) {
      if (a == left.id && b == right.id) {
        merge = {priority, merged};
        return true;
      }
    }
    return false;
  };
}

std::vector<sg::io::detail::BpeSymbol> abcab(bool first_mergeable = true) {
  return {{0, 1, 0, first_mergeable}, {1, 1, 1, true}, {2, 1, 2, true}, {3, 1, 0, true}, {4, 1, 1, true}};
}

TEST(TokenizerBpeMerge, LowestPriorityFirstLeftmostOnTies) {
  using sg::io::detail::bpe_merge;
  using Ids32 = std::vector<int32_t>;
  // Both "ab" (3, priority 1) merge before "ab c" (5, priority 2): ab c ab -> [5, 3].
  EXPECT_EQ(bpe_merge(abcab(), pair_table({{0, 1, 1, 3}, {3, 2, 2, 5}})), (Ids32{5, 3}));
  // "bc" (4, priority 0) goes first and takes the first "b": a bc ab.
  EXPECT_EQ(bpe_merge(abcab(), pair_table({{0, 1, 1, 3}, {1, 2, 0, 4}})), (Ids32{0, 4, 3}));
  // "ab" and "ca" tie at 1: leftmost first, so "ab" then "ca" -> ab ca b; "ab"+"ca" is no rule.
  EXPECT_EQ(bpe_merge(abcab(), pair_table({{0, 1, 1, 3}, {2, 0, 1, 4}})), (Ids32{3, 4, 1}));
  // A symbol that is not mergeable stays as it is.
  EXPECT_EQ(bpe_merge(abcab(false), pair_table({{0, 1, 1, 3}})), (Ids32{0, 1, 2, 3}));
  EXPECT_EQ(bpe_merge({}, pair_table({})), Ids32{});
}

// ---------------------------------------------------------------------------------------------
// Byte tokenizer

TEST(ByteTokenizer, IdsAreBytes) {
  auto tok = sg::io::make_byte_tokenizer();
  EXPECT_EQ(tok->kind(), "byte");
  EXPECT_EQ(tok->vocab_size(), 256);
  EXPECT_EQ(tok->bos_id(), -1);
  EXPECT_EQ(tok->eos_id(), -1);
  EXPECT_EQ(tok->encode(std::string("AB\0\xFF", 4)), (Ids{65, 66, 0, 255}));
  EXPECT_EQ(tok->decode({104, 105, 0xE2, 0x82, 0xAC}), "hi\xE2\x82\xAC");
  EXPECT_EQ(tok->token_bytes(-1, 0x41), "A");
  EXPECT_THROW(tok->decode({256}), sg::Error);
  EXPECT_THROW(tok->decode({-1}), sg::Error);
}

// ---------------------------------------------------------------------------------------------
// SentencePiece-style BPE on a tiny vocabulary, expected ids worked out by hand

// Byte pieces come last (ids 14..269) so that nothing may assume run.c's "+3".
constexpr int64_t kTinyByteBase = 14;

nlohmann::ordered_json tiny_sp_json(bool add_dummy_prefix) {
  std::vector<std::string> pieces = {"<unk>",
                                     "<s>",
                                     "</s>",
                                     "\xE2\x96\x81",
                                     "a",
                                     "b",
                                     "c",
                                     "ab",
                                     "bc",
                                     "\xE2\x96\x81"
                                     "a",
                                     "abc",
                                     "x",
                                     "xx",
                                     "\xE2\x82\xAC"};
  std::vector<double> scores = {0, 0, 0, -10, -10, -10, -10, -1, -2, -3, -0.5, -10, -1, -10};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    pieces.push_back(name);
    scores.push_back(0);
  }
  nlohmann::ordered_json root;
  root["format"] = "skillgraft.tokenizer";
  root["version"] = 1;
  root["kind"] = "sentencepiece_bpe";
  root["pieces"] = pieces;
  root["scores"] = scores;
  root["bos_id"] = 1;
  root["eos_id"] = 2;
  root["unk_id"] = 0;
  root["add_dummy_prefix"] = add_dummy_prefix;
  return root;
}

std::unique_ptr<Tokenizer> tiny_sp(bool add_dummy_prefix = true) {
  std::string dir = sg::test::temp_dir("sg-tok-sp");
  write_file_atomic(join_path(dir, "skillgraft_tokenizer.json"), tiny_sp_json(add_dummy_prefix).dump());
  return sg::io::load_tokenizer(dir);
}

TEST(SentencePieceTokenizer, TinyVocabularyHandComputed) {
  auto tok = tiny_sp();
  EXPECT_EQ(tok->kind(), "sentencepiece_bpe");
  EXPECT_EQ(tok->vocab_size(), 270);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->encode(""), Ids{});
  // " abc": ab (-1) beats ▁a (-3) and bc (-2); then abc (-0.5); "▁abc" is no piece.
  EXPECT_EQ(tok->encode("abc"), (Ids{3, 10}));
  EXPECT_EQ(tok->encode("a"), (Ids{9}));
  // " bca": only bc merges.
  EXPECT_EQ(tok->encode("bca"), (Ids{3, 8, 4}));
  // Equal scores: the leftmost pair merges first.
  EXPECT_EQ(tok->encode("xxx"), (Ids{3, 12, 11}));
  // A code point that is a piece; one that is not (é = C3 A9) falls back to bytes.
  EXPECT_EQ(tok->encode("\xE2\x82\xAC"), (Ids{3, 13}));
  EXPECT_EQ(tok->encode("\xC3\xA9"), (Ids{3, kTinyByteBase + 0xC3, kTinyByteBase + 0xA9}));
  // Ill-formed UTF-8: every byte on its own.
  EXPECT_EQ(tok->encode("\xE2\x82"
                        "a"),
            (Ids{3, kTinyByteBase + 0xE2, kTinyByteBase + 0x82, 4}));
  // A leading space: "  a" -> ▁ + ▁a.
  EXPECT_EQ(tok->encode(" a"), (Ids{3, 9}));
  // Text that spells a byte piece's name stays text.
  EXPECT_EQ(tok->encode("<0x41>"), (Ids{3, kTinyByteBase + '<', kTinyByteBase + '0', 11, kTinyByteBase + '4',
                                        kTinyByteBase + '1', kTinyByteBase + '>'}));
  // Control pieces never come from text.
  EXPECT_EQ(tok->encode("<s>"), (Ids{3, kTinyByteBase + '<', kTinyByteBase + 's', kTinyByteBase + '>'}));
}

TEST(SentencePieceTokenizer, TinyVocabularyDecode) {
  auto tok = tiny_sp();
  EXPECT_EQ(tok->decode({3, 10}), "abc");
  EXPECT_EQ(tok->decode({9, 9}), "a a");
  EXPECT_EQ(tok->decode({3, 9}), " a");
  EXPECT_EQ(tok->decode({1, 9, 2}), "a");  // BOS/EOS decode to nothing; the space after BOS goes
  EXPECT_EQ(tok->decode({kTinyByteBase + 0x20, 4}), "a");  // the dummy prefix as a byte piece
  EXPECT_EQ(tok->decode({kTinyByteBase + 0xE2, kTinyByteBase + 0x82, kTinyByteBase + 0xAC}), "\xE2\x82\xAC");
  EXPECT_EQ(tok->decode({0}), "<unk>");
  EXPECT_EQ(tok->token_bytes(-1, 9), "a");
  EXPECT_EQ(tok->token_bytes(1, 9), "a");
  EXPECT_EQ(tok->token_bytes(4, 9), " a");
  EXPECT_THROW(tok->decode({270}), sg::Error);
  EXPECT_THROW(tok->decode({-1}), sg::Error);
}

TEST(SentencePieceTokenizer, WithoutDummyPrefix) {
  auto tok = tiny_sp(false);
  EXPECT_EQ(tok->encode("abc"), (Ids{10}));
  EXPECT_EQ(tok->encode(" a"), (Ids{9}));
  EXPECT_EQ(tok->decode({9}), " a");
}

// ---------------------------------------------------------------------------------------------
// tok512 (llama2.c's tokenizer.bin)

std::string tok512_path() { return join_path(sg::test::source_dir(), "data/models/tok512.bin"); }

TEST(Llama2cTokenizer, LoadsTok512) {
  auto tok = sg::io::load_llama2c_tokenizer(tok512_path(), 512);
  EXPECT_EQ(tok->kind(), "sentencepiece_bpe");
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  // Ids from tests/reference/sp_tokenizer_ref.py (the independent Python encoder) on tok512.bin.
  EXPECT_EQ(tok->encode("Once upon a time"), (Ids{403, 407, 261, 378}));
  EXPECT_EQ(tok->encode(" hello  world "), (Ids{410, 281, 306, 414, 410, 263, 304, 341, 410}));
  EXPECT_EQ(tok->encode("\xFF\xFE"
                        "ab\xE2\x82"),
            (Ids{410, 258, 257, 412, 430, 229, 133}));
  EXPECT_EQ(tok->encode("h\xC3\xA9llo \xE6\x97\xA5\xE6\x9C\xAC"),
            (Ids{270, 485, 306, 414, 410, 233, 154, 168, 233, 159, 175}));
  EXPECT_EQ(tok->decode({1, 403, 407, 261, 378}), "Once upon a time");
}

// ---------------------------------------------------------------------------------------------
// GPT-2 pre-tokenizer (splits as GPT-2's regex makes them)

using Words = std::vector<std::string>;

TEST(Gpt2PreTokenizer, SplitsLikeGpt2) {
  using sg::io::detail::gpt2_pretokenize;
  EXPECT_EQ(gpt2_pretokenize(""), Words{});
  EXPECT_EQ(gpt2_pretokenize("Hello world"), (Words{"Hello", " world"}));
  EXPECT_EQ(gpt2_pretokenize("I'm  here"), (Words{"I", "'m", " ", " here"}));
  EXPECT_EQ(gpt2_pretokenize("don't they'll we've"), (Words{"don", "'t", " they", "'ll", " we", "'ve"}));
  EXPECT_EQ(gpt2_pretokenize("DON'T"), (Words{"DON", "'", "T"}));
  EXPECT_EQ(gpt2_pretokenize("a\n\nb"), (Words{"a", "\n", "\n", "b"}));
  EXPECT_EQ(gpt2_pretokenize("x  "), (Words{"x", "  "}));
  EXPECT_EQ(gpt2_pretokenize("123abc $100!!"), (Words{"123", "abc", " $", "100", "!!"}));
  EXPECT_EQ(gpt2_pretokenize("\tif (x)"), (Words{"\t", "if", " (", "x", ")"}));
  EXPECT_EQ(gpt2_pretokenize("caf\xC3\xA9 \xD0\xBC\xD0\xB8\xD1\x80"),
            (Words{"caf\xC3\xA9", " \xD0\xBC\xD0\xB8\xD1\x80"}));
  // U+00A0 is \s everywhere: "a", NBSP, " b"? No: the NBSP run is followed by " b", so \s+(?!\S)
  // takes NBSP alone and " b" stays together.
  EXPECT_EQ(gpt2_pretokenize("a\xC2\xA0 b"), (Words{"a", "\xC2\xA0", " b"}));
  // U+FEFF is \s in JavaScript (the npm package we match), so " " and BOM split apart;
  // Python's regex would keep " \uFEFF" together.
  EXPECT_EQ(gpt2_pretokenize(" \xEF\xBB\xBF"
                             "a"),
            (Words{" ", "\xEF\xBB\xBF", "a"}));
  // U+0085 is not \s in JavaScript: it is "other", so " \u0085" is one word.
  EXPECT_EQ(gpt2_pretokenize(" \xC2\x85"
                             "a"),
            (Words{" \xC2\x85", "a"}));
  // Ill-formed UTF-8: each bad byte is a word; the well-formed runs around it split as usual.
  EXPECT_EQ(gpt2_pretokenize("ab\xFF"
                             "cd"),
            (Words{"ab", "\xFF", "cd"}));
  EXPECT_EQ(gpt2_pretokenize("\xFF\xFE"), (Words{"\xFF", "\xFE"}));
  EXPECT_EQ(gpt2_pretokenize("x \xE2\x82 y"), (Words{"x", " ", "\xE2", "\x82", " y"}));
}

TEST(Gpt2PreTokenizer, WordsConcatenateToTheInput) {
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    std::string text = i % 2 ? tt::random_bytes(rng, 60) : tt::random_utf8(rng, 40);
    std::string joined;
    for (const auto& word : sg::io::detail::gpt2_pretokenize(text)) {
      ASSERT_FALSE(word.empty());
      joined += word;
    }
    ASSERT_EQ(joined, text) << "case " << i;
  }
}

// ---------------------------------------------------------------------------------------------
// GPT-2 byte-level BPE on a tiny vocabulary, expected ids worked out by hand

TEST(Gpt2Tokenizer, TinyVocabularyHandComputed) {
  std::string dir = tt::write_tiny_gpt2(sg::test::temp_dir("sg-tok-gpt2"), tt::Gpt2Files::kVocabAndMerges);
  auto tok = sg::io::load_tokenizer(dir);
  EXPECT_EQ(tok->kind(), "gpt2_bpe");
  EXPECT_EQ(tok->vocab_size(), 268);
  EXPECT_EQ(tok->eos_id(), 267);
  EXPECT_EQ(tok->bos_id(), 267);
  // "the": he (rank 1) -> [t, he]. " this": Ġt, is, Ġth, Ġthis. " is": is, Ġis.
  EXPECT_EQ(tok->encode("the this is"), (Ids{'t', 257, 264, 260}));
  // "it" has no merges; "'s" is merge 9.
  EXPECT_EQ(tok->encode("it's"), (Ids{'i', 't', 265}));
  // "  the" -> " " + " the"; " the": Ġt, he, Ġthe.
  EXPECT_EQ(tok->encode("  the"), (Ids{' ', 258}));
  // Special tokens in text are text.
  EXPECT_EQ(tok->encode("<|endoftext|>"),
            (Ids{'<', '|', 'e', 'n', 'd', 'o', 'f', 't', 'e', 'x', 't', '|', '>'}));
  // Equal ranks (the same pair twice): leftmost first, as encoder.py merges left to right.
  EXPECT_EQ(tok->encode("ooo"), (Ids{266, 'o'}));
  EXPECT_EQ(tok->encode("oooo"), (Ids{266, 266}));
  EXPECT_EQ(tok->encode("\xFF"), (Ids{0xFF}));
  EXPECT_EQ(tok->decode({'t', 257, 264, 260}), "the this is");
  EXPECT_EQ(tok->decode({267}), "<|endoftext|>");
  EXPECT_EQ(tok->token_bytes(5, 258), " the");
  EXPECT_THROW(tok->decode({268}), sg::Error);
}

TEST(Gpt2Tokenizer, TokenizerJsonMatchesVocabAndMerges) {
  auto reference = sg::io::load_tokenizer(
      tt::write_tiny_gpt2(sg::test::temp_dir("sg-tok-gpt2"), tt::Gpt2Files::kVocabAndMerges));
  auto string_merges = sg::io::load_tokenizer(
      tt::write_tiny_gpt2(sg::test::temp_dir("sg-tok-gpt2"), tt::Gpt2Files::kTokenizerJsonStringMerges));
  auto pair_merges = sg::io::load_tokenizer(
      tt::write_tiny_gpt2(sg::test::temp_dir("sg-tok-gpt2"), tt::Gpt2Files::kTokenizerJsonPairMerges));
  for (const auto* tok : {string_merges.get(), pair_merges.get()}) {
    EXPECT_EQ(tok->kind(), "gpt2_bpe");
    EXPECT_EQ(tok->vocab_size(), reference->vocab_size());
    EXPECT_EQ(tok->eos_id(), reference->eos_id());
  }
  std::mt19937 rng(11);
  std::vector<std::string> texts = {"the this is", "it's this the is", "  the\n\nthis  "};
  for (int i = 0; i < 500; ++i) texts.push_back(tt::random_text(rng, 40));
  for (const auto& text : texts) {
    Ids expected = reference->encode(text);
    ASSERT_EQ(string_merges->encode(text), expected) << tt::printable(text);
    ASSERT_EQ(pair_merges->encode(text), expected) << tt::printable(text);
  }
}

TEST(Gpt2Tokenizer, AddedTokensOutsideTheVocabulary) {
  std::string dir = sg::test::temp_dir("sg-tok-gpt2");
  nlohmann::json root = tt::tiny_gpt2_tokenizer_json(true);
  root["added_tokens"].push_back({{"id", 268}, {"content", "<|im start|> \xC3\xA9"}, {"special", true}});
  write_file_atomic(join_path(dir, "tokenizer.json"), root.dump());
  auto tok = sg::io::load_tokenizer(dir);
  EXPECT_EQ(tok->vocab_size(), 269);
  EXPECT_EQ(tok->eos_id(), 267);
  EXPECT_EQ(tok->decode({268}), "<|im start|> \xC3\xA9");  // literal text, not byte-level
  // Saved as vocab.json + merges.txt, it decodes the same.
  std::string saved = sg::test::temp_dir("sg-tok-gpt2-saved");
  tok->save(saved);
  auto reloaded = sg::io::load_tokenizer(saved);
  EXPECT_EQ(reloaded->vocab_size(), 269);
  EXPECT_EQ(reloaded->decode({268}), "<|im start|> \xC3\xA9");
}

// ---------------------------------------------------------------------------------------------
// Round trips: decode(encode(s)) == s, and token_bytes streams the same bytes, for every kind

struct NamedTokenizer {
  std::string name;
  std::unique_ptr<Tokenizer> tokenizer;
};

std::vector<NamedTokenizer> every_kind() {
  std::vector<NamedTokenizer> out;
  out.push_back({"tok512", sg::io::load_llama2c_tokenizer(tok512_path(), 512)});
  out.push_back({"tiny sentencepiece", tiny_sp()});
  out.push_back({"tiny sentencepiece, no dummy prefix", tiny_sp(false)});
  out.push_back({"tiny gpt2 vocab.json", sg::io::load_tokenizer(tt::write_tiny_gpt2(
                                             sg::test::temp_dir("sg-tok"), tt::Gpt2Files::kVocabAndMerges))});
  out.push_back({"tiny gpt2 tokenizer.json",
                 sg::io::load_tokenizer(tt::write_tiny_gpt2(sg::test::temp_dir("sg-tok"),
                                                            tt::Gpt2Files::kTokenizerJsonPairMerges))});
  out.push_back({"byte", sg::io::make_byte_tokenizer()});
  return out;
}

TEST(TokenizerRoundTrip, RandomBytesAndUtf8EveryKind) {
  std::vector<std::string> fixed = {"",
                                    " ",
                                    "  ",
                                    "   x   ",
                                    "\t\n",
                                    "\n",
                                    "a",
                                    " a",
                                    "a ",
                                    "\xFF",
                                    " \xFF",
                                    "\xE2\x82",
                                    std::string("\0\0", 2),
                                    "<0x41>",
                                    "<s></s><unk>",
                                    "<|endoftext|>",
                                    "\xE2\x96\x81",
                                    "\xE2\x96\x81 \xE2\x96\x81",
                                    "\xEF\xBB\xBF",
                                    "\xED\xA0\x80"};
  for (const auto& [name, tok] : every_kind()) {
    std::mt19937 rng(1234);
    std::vector<std::string> texts = fixed;
    for (int i = 0; i < 2000; ++i) texts.push_back(tt::random_bytes(rng, 48));
    for (int i = 0; i < 2000; ++i) texts.push_back(tt::random_utf8(rng, 32));
    for (const auto& text : texts) {
      Ids ids = tok->encode(text);
      for (int64_t id : ids) ASSERT_TRUE(id >= 0 && id < tok->vocab_size()) << name;
      ASSERT_EQ(tok->decode(ids), text) << name << ": " << tt::printable(text);
      std::string streamed;
      int64_t previous = -1;
      for (int64_t id : ids) {
        streamed += tok->token_bytes(previous, id);
        previous = id;
      }
      ASSERT_EQ(streamed, text) << name << ": " << tt::printable(text);
    }
  }
}

TEST(TokenizerRoundTrip, LongInputsAreNotQuadratic) {
  // A quadratic merge loop takes minutes here; the heap-based one takes milliseconds.
  std::string letters(200000, 'a');
  std::string mixed;
  std::mt19937 rng(3);
  while (mixed.size() < 200000) mixed += tt::random_text(rng, 64);
  for (const auto& [name, tok] : every_kind()) {
    for (const std::string* text : {&letters, &mixed}) {
      ASSERT_EQ(tok->decode(tok->encode(*text)), *text) << name;
    }
  }
}

TEST(TokenizerRoundTrip, SharedBetweenThreads) {
  // Loaded tokenizers are shared by serving threads; gpt2_bpe's word cache is their one mutable part.
  std::mt19937 rng(8);
  std::vector<std::string> texts;
  for (int i = 0; i < 300; ++i) texts.push_back(tt::random_text(rng, 40));
  for (const auto& [name, tok] : every_kind()) {
    std::vector<Ids> expected;
    for (const auto& text : texts) expected.push_back(tok->encode(text));
    std::vector<int> mismatches(4, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        for (int round = 0; round < 5; ++round) {
          for (size_t i = 0; i < texts.size(); ++i) {
            size_t k = (i * (t + 1) + round) % texts.size();
            if (tok->encode(texts[k]) != expected[k] || tok->decode(expected[k]) != texts[k]) ++mismatches[t];
          }
        }
      });
    }
    for (auto& thread : threads) thread.join();
    for (int t = 0; t < 4; ++t) EXPECT_EQ(mismatches[t], 0) << name << ", thread " << t;
  }
}

// ---------------------------------------------------------------------------------------------
// Save / load

TEST(TokenizerSave, SentencePieceRoundTripIsByteExact) {
  auto tok = sg::io::load_llama2c_tokenizer(tok512_path(), 512);
  std::string first = sg::test::temp_dir("sg-tok-save");
  tok->save(first);
  auto loaded = sg::io::load_tokenizer(first);
  EXPECT_EQ(loaded->kind(), "sentencepiece_bpe");
  EXPECT_EQ(loaded->vocab_size(), 512);
  EXPECT_EQ(loaded->bos_id(), 1);
  EXPECT_EQ(loaded->eos_id(), 2);
  std::string second = sg::test::temp_dir("sg-tok-save");
  loaded->save(second);
  std::string file = read_file(join_path(first, "skillgraft_tokenizer.json"));
  EXPECT_EQ(read_file(join_path(second, "skillgraft_tokenizer.json")), file);

  // The file uses SentencePiece's U+2581 for a space: tok512.bin's piece 259 is " t", 260 "he" (score -1).
  nlohmann::json root = nlohmann::json::parse(file);
  EXPECT_EQ(root["format"], "skillgraft.tokenizer");
  EXPECT_EQ(root["version"], 1);
  EXPECT_EQ(root["kind"], "sentencepiece_bpe");
  EXPECT_EQ(root["pieces"][259], "\xE2\x96\x81t");
  EXPECT_EQ(root["pieces"][3], "<0x00>");
  EXPECT_EQ(root["scores"][260], -1.0);
  EXPECT_EQ(root["unk_id"], 0);
  EXPECT_EQ(root["add_dummy_prefix"], true);
  for (const auto& piece : root["pieces"]) EXPECT_EQ(piece.get<std::string>().find(' '), std::string::npos);

  std::mt19937 rng(5);
  for (int i = 0; i < 500; ++i) {
    std::string text = tt::random_text(rng, 40);
    ASSERT_EQ(loaded->encode(text), tok->encode(text)) << tt::printable(text);
  }
}

TEST(TokenizerSave, Gpt2RoundTripIsByteExact) {
  auto tok = sg::io::load_tokenizer(
      tt::write_tiny_gpt2(sg::test::temp_dir("sg-tok"), tt::Gpt2Files::kTokenizerJsonStringMerges));
  std::string first = sg::test::temp_dir("sg-tok-save");
  tok->save(first);
  auto loaded = sg::io::load_gpt2_tokenizer(join_path(first, "vocab.json"), join_path(first, "merges.txt"));
  std::string second = sg::test::temp_dir("sg-tok-save");
  loaded->save(second);
  EXPECT_EQ(read_file(join_path(second, "vocab.json")), read_file(join_path(first, "vocab.json")));
  EXPECT_EQ(read_file(join_path(second, "merges.txt")), read_file(join_path(first, "merges.txt")));
  EXPECT_EQ(read_file(join_path(first, "merges.txt")).rfind("#version: 0.2\n\xC4\xA0 t\n", 0), 0u);
  EXPECT_EQ(loaded->vocab_size(), tok->vocab_size());
  EXPECT_EQ(loaded->eos_id(), tok->eos_id());
  std::mt19937 rng(6);
  for (int i = 0; i < 500; ++i) {
    std::string text = tt::random_text(rng, 40);
    ASSERT_EQ(loaded->encode(text), tok->encode(text)) << tt::printable(text);
  }
}

TEST(TokenizerSave, ByteRoundTrip) {
  std::string dir = sg::test::temp_dir("sg-tok-save");
  sg::io::make_byte_tokenizer()->save(dir);
  nlohmann::json root = nlohmann::json::parse(read_file(join_path(dir, "skillgraft_tokenizer.json")));
  EXPECT_EQ(root["kind"], "byte");
  auto loaded = sg::io::load_tokenizer(dir);
  EXPECT_EQ(loaded->kind(), "byte");
  EXPECT_EQ(loaded->encode("hi"), (Ids{'h', 'i'}));
}

TEST(TokenizerSave, LoadTokenizerPrefersSkillgraftThenTokenizerJsonThenVocab) {
  std::string dir = tt::write_tiny_gpt2(sg::test::temp_dir("sg-tok"), tt::Gpt2Files::kVocabAndMerges);
  EXPECT_EQ(sg::io::load_tokenizer(dir)->vocab_size(), 268);
  nlohmann::json root = tt::tiny_gpt2_tokenizer_json(true);
  root["added_tokens"].push_back({{"id", 268}, {"content", "<extra>"}});
  write_file_atomic(join_path(dir, "tokenizer.json"), root.dump());
  EXPECT_EQ(sg::io::load_tokenizer(dir)->vocab_size(), 269);
  sg::io::make_byte_tokenizer()->save(dir);
  EXPECT_EQ(sg::io::load_tokenizer(dir)->kind(), "byte");
}

// ---------------------------------------------------------------------------------------------
// Bad files: each is an sg::Error whose message names the file and says what is wrong (HF
// Llama-family tokenizer.json: test_tokenizer_hf.cpp)

std::string int32_bytes(int32_t value) { return std::string(reinterpret_cast<const char*>(&value), 4); }
std::string float_bytes(float value) { return std::string(reinterpret_cast<const char*>(&value), 4); }

TEST(TokenizerBadFiles, Llama2cTokenizer) {
  const std::string dir = sg::test::temp_dir("sg-tok-bad");
  const std::string good = read_file(tok512_path());
  const std::string path = join_path(dir, "tok.bin");
  auto load = [&](int64_t vocab_size) { return [=] { sg::io::load_llama2c_tokenizer(path, vocab_size); }; };

  expect_error(load(512), {path, "cannot open"});
  write_file_atomic(path, "");
  expect_error(load(512), {path, "truncated", "max_token_length"});
  write_file_atomic(path, good.substr(0, good.size() / 2));
  expect_error(load(512), {path, "truncated"});
  write_file_atomic(path, good.substr(0, good.size() - 1));
  expect_error(load(512), {path, "truncated", "token 511"});
  write_file_atomic(path, good);
  expect_error(load(513), {path, "holds 512 tokens", "vocab_size is 513"});
  expect_error(load(511), {path, "bytes left after the 511 tokens"});
  expect_error(load(0), {path, "vocab_size 0"});
  // tok512.bin's first token: score 0, length 5, "<unk>".
  write_file_atomic(path, int32_bytes(7) + float_bytes(0) + int32_bytes(-5) + "<unk>");
  expect_error(load(512), {path, "token 0 has length -5"});
  write_file_atomic(path, int32_bytes(7) + float_bytes(0) + int32_bytes(1000000000) + "<unk>");
  expect_error(load(512), {path, "token 0 has length 1000000000"});
  write_file_atomic(path, int32_bytes(7) + float_bytes(0) + int32_bytes(7) + "<unk>");
  expect_error(load(512), {path, "truncated", "token 0 needs 7 bytes"});
  write_file_atomic(path, int32_bytes(-1) + good.substr(4));
  expect_error(load(512), {path, "max_token_length -1"});
  // Well-formed but without byte-fallback pieces.
  write_file_atomic(path, int32_bytes(5) + float_bytes(0) + int32_bytes(5) + "<unk>" + float_bytes(0) +
                              int32_bytes(3) + "<s>" + float_bytes(0) + int32_bytes(4) + "</s>");
  expect_error(load(3), {path, "no byte-fallback piece <0x00>"});
}

TEST(TokenizerBadFiles, SkillgraftTokenizerJson) {
  const std::string dir = sg::test::temp_dir("sg-tok-bad");
  const std::string path = join_path(dir, "skillgraft_tokenizer.json");
  auto load = [&] { sg::io::load_skillgraft_tokenizer(path); };
  auto write = [&](const nlohmann::ordered_json& root) { write_file_atomic(path, root.dump()); };

  expect_error(load, {path, "cannot open"});
  write_file_atomic(path, "{\"format\": ");
  expect_error(load, {path, "not valid JSON"});
  write_file_atomic(path, "[1, 2]");
  expect_error(load, {path, "top level must be a JSON object"});

  // Each case: one edit of a good file, and what the error must say besides the path.
  auto expect_edit_error = [&](const std::function<void(nlohmann::ordered_json&)>& edit,
                               std::vector<std::string> fragments) {
    nlohmann::ordered_json root = tiny_sp_json(true);
    edit(root);
    write(root);
    fragments.insert(fragments.begin(), path);
    expect_error(load, fragments);
  };
  expect_edit_error([](auto& root) { root["format"] = "something.else"; },
                    {"\"format\" is \"something.else\""});
  expect_edit_error([](auto& root) { root.erase("format"); }, {"missing \"format\""});
  expect_edit_error([](auto& root) { root["version"] = 3; }, {"unsupported version 3"});
  expect_edit_error([](auto& root) { root["merges"] = nlohmann::json::array(); },
                    {"\"merges\" needs version 2"});
  expect_edit_error([](auto& root) { root["kind"] = "wordpiece"; }, {"unknown tokenizer kind \"wordpiece\""});
  expect_edit_error([](auto& root) { root["scores"].erase(root["scores"].size() - 1); },
                    {"\"pieces\" has 270 entries but \"scores\" has 269"});
  expect_edit_error([](auto& root) { root["pieces"][4] = 17; }, {"pieces[4] must be a string"});
  expect_edit_error([](auto& root) { root["scores"][4] = "high"; }, {"scores[4] must be a number"});
  expect_edit_error([](auto& root) { root.erase("bos_id"); }, {"missing \"bos_id\""});
  expect_edit_error([](auto& root) { root["eos_id"] = 270; },
                    {"special token id 270 is outside the vocabulary of 270"});
  expect_edit_error([](auto& root) { root["add_dummy_prefix"] = "yes"; },
                    {"\"add_dummy_prefix\" must be true or false"});
  expect_edit_error([](auto& root) { root["pieces"][kTinyByteBase + 0x41] = "<0x41x"; },
                    {"no byte-fallback piece <0x41>"});
}

TEST(TokenizerBadFiles, Gpt2VocabAndMerges) {
  const std::string dir =
      tt::write_tiny_gpt2(sg::test::temp_dir("sg-tok-bad"), tt::Gpt2Files::kVocabAndMerges);
  const std::string vocab_path = join_path(dir, "vocab.json");
  const std::string merges_path = join_path(dir, "merges.txt");
  const std::string good_vocab = read_file(vocab_path);
  const std::string good_merges = read_file(merges_path);
  auto load = [&] { sg::io::load_gpt2_tokenizer(vocab_path, merges_path); };

  write_file_atomic(merges_path, "#version: 0.2\n\xC4\xA0 t\nh\n");
  expect_error(load, {merges_path + ":3", "expected \"<left> <right>\""});
  write_file_atomic(merges_path, "#version: 0.2\n\xC4\xA0 t\nh e x\n");
  expect_error(load, {merges_path + ":3"});
  write_file_atomic(merges_path, "#version: 0.2\nq z\n");
  expect_error(load, {merges_path + ":2", "\"qz\" is not in the vocabulary"});
  write_file_atomic(merges_path, good_merges);

  nlohmann::json vocab = nlohmann::json::parse(good_vocab);
  vocab["<|endoftext|>"] = 5;
  write_file_atomic(vocab_path, vocab.dump());
  expect_error(load, {vocab_path, "id 5 is given to both"});
  vocab = nlohmann::json::parse(good_vocab);
  vocab["<|endoftext|>"] = 300;
  write_file_atomic(vocab_path, vocab.dump());
  expect_error(load, {vocab_path, "has id 300", "without gaps"});
  vocab = nlohmann::json::parse(good_vocab);
  vocab["<|endoftext|>"] = "267";
  write_file_atomic(vocab_path, vocab.dump());
  expect_error(load, {vocab_path, "must be an integer"});
  vocab = nlohmann::json::parse(good_vocab);
  vocab.erase("!");
  vocab["<|extra|>"] = 33;
  write_file_atomic(vocab_path, vocab.dump());
  expect_error(load, {vocab_path, "no token for byte 33", "not a byte-level BPE vocabulary"});
  write_file_atomic(vocab_path, "[]");
  expect_error(load, {vocab_path, "must be a JSON object"});
}

TEST(TokenizerBadFiles, HfTokenizerJson) {
  const std::string dir = sg::test::temp_dir("sg-tok-bad");
  const std::string path = join_path(dir, "tokenizer.json");
  auto load = [&] { sg::io::load_hf_tokenizer_json(path); };
  auto write = [&](const nlohmann::json& root) { write_file_atomic(path, root.dump()); };

  // Each case: one edit of a good file, and what the error must say besides the path.
  auto expect_edit_error = [&](const std::function<void(nlohmann::json&)>& edit,
                               std::vector<std::string> fragments, bool pair_merges = true) {
    nlohmann::json root = tt::tiny_gpt2_tokenizer_json(pair_merges);
    edit(root);
    write(root);
    fragments.insert(fragments.begin(), path);
    expect_error(load, fragments);
  };
  expect_edit_error([](auto& root) { root["model"]["type"] = "WordPiece"; },
                    {"model.type is \"WordPiece\"", "byte-level BPE"});
  expect_edit_error([](auto& root) { root.erase("model"); }, {"missing \"model\""});
  // byte_fallback means the Llama-2 form, which wants spaces as U+2581.
  expect_edit_error([](auto& root) { root["model"]["byte_fallback"] = true; },
                    {"pre_tokenizer is \"ByteLevel\" and there is no normalizer", "byte_fallback"});
  expect_edit_error(
      [](auto& root) {
        root["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}};
      },
      {"pre_tokenizer is \"Metaspace\""});
  expect_edit_error([](auto& root) { root["pre_tokenizer"]["add_prefix_space"] = true; },
                    {"add_prefix_space"});
  expect_edit_error([](auto& root) { root["normalizer"] = {{"type", "NFC"}}; }, {"normalizer"});
  expect_edit_error(
      [](auto& root) {
        root["model"]["merges"][2] = nlohmann::json::array({1, 2});
      },
      {"model.merges[2]"});
  expect_edit_error([](auto& root) { root["model"]["merges"][2] = "he"; }, {"model.merges[2] is \"he\""},
                    false);
  expect_edit_error(
      [](auto& root) {
        root["model"]["merges"][3] = nlohmann::json::array({"i", "z"});
      },
      {"model.merges[3]", "\"iz\" is not in the vocabulary"});
  expect_edit_error(
      [](auto& root) {
        root["added_tokens"].push_back({{"id", 5}, {"content", "<pad>"}});
      },
      {"added_tokens[1] gives id 5 to \"<pad>\""});
}

TEST(TokenizerBadFiles, LoadTokenizerNamesTheDirectoryAndTheFiles) {
  const std::string dir = sg::test::temp_dir("sg-tok-empty");
  expect_error([&] { sg::io::load_tokenizer(dir); },
               {dir, "skillgraft_tokenizer.json", "tokenizer.json", "vocab.json + merges.txt"});
  write_file_atomic(join_path(dir, "vocab.json"), "{}");
  expect_error([&] { sg::io::load_tokenizer(dir); }, {dir, "merges.txt is not"});
  expect_error([&] { sg::io::load_tokenizer(join_path(dir, "missing")); }, {"missing", "not a directory"});
}

}  // namespace
