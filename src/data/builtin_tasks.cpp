// Built-in task generators. Each draws from std::mt19937_64 through uniform_below and shuffle
// below (never <random>'s distributions or std::shuffle, whose outputs differ between standard
// libraries), so a seed names the same files everywhere.
#include "data/builtin_tasks.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <limits>
#include <map>
#include <set>
#include <utility>

#include "data/mo_file.h"
#include "util/error.h"
#include "util/file.h"

namespace sg::data {

namespace {

const char* const kIsoCodesHint = "hint: install iso-codes (scripts/setup.sh)";

struct SplitSizes {
  int64_t train, validation, test;
  int64_t total() const { return train + validation + test; }
};

SplitSizes split_sizes(const BuiltinTaskOptions& options) {
  SG_CHECK(options.train_size >= 4, "--n must be at least 4 (validation and test get n/4 each), got "
                                        << options.train_size);
  return {options.train_size, options.train_size / 4, options.train_size / 4};
}

template <typename T>
void shuffle(std::vector<T>& items, std::mt19937_64& rng) {
  for (size_t i = items.size(); i > 1; --i) std::swap(items[i - 1], items[uniform_below(rng, i)]);
}

Example generation(std::string prompt, std::string answer) {
  Example e;
  e.prompt = std::move(prompt);
  e.completion = " " + std::move(answer) + ".";
  return e;
}

// Splits distinct examples into train/validation/test without repeats (so the splits are disjoint).
TaskSplits split_distinct(const std::string& task, std::vector<Example> pool, const SplitSizes& sizes,
                          std::mt19937_64& rng) {
  SG_CHECK(static_cast<int64_t>(pool.size()) >= sizes.total(),
           "task " << task << " has " << pool.size() << " distinct examples, too few for --n " << sizes.train
                   << " (needs " << sizes.total() << " with validation and test); hint: use a smaller --n");
  shuffle(pool, rng);
  TaskSplits splits;
  auto begin = pool.begin();
  splits.train.assign(begin, begin + sizes.train);
  splits.validation.assign(begin + sizes.train, begin + sizes.train + sizes.validation);
  splits.test.assign(begin + sizes.train + sizes.validation, begin + sizes.total());
  return splits;
}

// Memorised facts: each split cycles through its own fresh shuffle of the whole pool.
std::vector<Example> draw_cycling(const std::vector<Example>& pool, int64_t count, std::mt19937_64& rng) {
  std::vector<Example> out, order;
  while (static_cast<int64_t>(out.size()) < count) {
    if (order.empty()) {
      order = pool;
      shuffle(order, rng);
    }
    out.push_back(order.back());
    order.pop_back();
  }
  return out;
}

TaskSplits split_memorised(const std::vector<Example>& pool, const SplitSizes& sizes, std::mt19937_64& rng) {
  TaskSplits splits;
  splits.train = draw_cycling(pool, sizes.train, rng);
  splits.validation = draw_cycling(pool, sizes.validation, rng);
  splits.test = draw_cycling(pool, sizes.test, rng);
  return splits;
}

// ---- opposite ----

// Every word appears once, so each prompt has one answer in both directions.
const std::pair<const char*, const char*> kOpposites[] = {
    {"big", "small"},       {"hot", "cold"},          {"up", "down"},         {"fast", "slow"},
    {"happy", "sad"},       {"old", "young"},         {"light", "dark"},      {"open", "closed"},
    {"full", "empty"},      {"wet", "dry"},           {"hard", "soft"},       {"early", "late"},
    {"rich", "poor"},       {"long", "short"},        {"thick", "thin"},      {"loud", "quiet"},
    {"clean", "dirty"},     {"strong", "weak"},       {"high", "low"},        {"in", "out"},
    {"left", "right"},      {"day", "night"},         {"black", "white"},     {"good", "bad"},
    {"true", "false"},      {"win", "lose"},          {"push", "pull"},       {"buy", "sell"},
    {"first", "last"},      {"inside", "outside"},    {"above", "below"},     {"give", "take"},
    {"start", "finish"},    {"always", "never"},      {"yes", "no"},          {"top", "bottom"},
    {"front", "back"},      {"near", "far"},          {"before", "after"},    {"come", "go"},
    {"sweet", "sour"},      {"love", "hate"},         {"cheap", "expensive"}, {"remember", "forget"},
    {"friend", "enemy"},    {"arrive", "leave"},      {"question", "answer"}, {"easy", "difficult"},
    {"laugh", "cry"},       {"north", "south"},       {"east", "west"},       {"summer", "winter"},
    {"wide", "narrow"},     {"deep", "shallow"},      {"brave", "cowardly"},  {"awake", "asleep"},
    {"safe", "dangerous"},  {"smooth", "rough"},      {"sharp", "blunt"},     {"boy", "girl"},
    {"king", "queen"},      {"on", "off"},            {"entrance", "exit"},   {"pass", "fail"},
};

TaskSplits make_opposite(const SplitSizes& sizes, std::mt19937_64& rng) {
  std::vector<Example> pool;
  for (const auto& [a, b] : kOpposites) {
    pool.push_back(generation(std::string("The opposite of ") + a + " is", b));
    pool.push_back(generation(std::string("The opposite of ") + b + " is", a));
  }
  return split_memorised(pool, sizes, rng);
}

// ---- sentiment ----

struct Person {
  const char* name;
  bool she;
};
// The last kHeldOutNames names and the last kHeldOutEvents events of each list appear only in test.
const Person kNames[] = {
    {"Lily", true},   {"Tom", false},  {"Mia", true},    {"Ben", false},   {"Emma", true},  {"Sam", false},
    {"Anna", true},   {"Jack", false}, {"Lucy", true},   {"Max", false},   {"Sara", true},  {"Leo", false},
    {"Ella", true},   {"Noah", false}, {"Grace", true},  {"Oscar", false}, {"Ruby", true},  {"Finn", false},
    {"Chloe", true},  {"Adam", false},
};
constexpr size_t kHeldOutNames = 6;
// {poss} becomes "her" or "his".
const char* const kHappyEvents[] = {
    "got a new puppy",           "won the race",                "found a shiny coin",
    "went to the beach",         "got a big hug from {poss} mom", "ate a warm cookie",
    "made a new friend",         "saw a rainbow",               "got a present",
    "scored a goal",             "finished {poss} drawing",     "went to a party",
    "learned to ride a bike",    "got a gold star",             "saw {poss} best friend",
    "built a tall tower",        "had ice cream",               "won a prize",
    "flew a kite in the park",   "heard a funny joke",          "got a new book",
    "planted a flower that grew", "went to the zoo",            "baked a cake with {poss} dad",
};
const char* const kSadEvents[] = {
    "lost {poss} favourite toy", "broke {poss} cup",            "fell and hurt {poss} knee",
    "missed the bus",            "dropped {poss} ice cream",    "lost the game",
    "could not find {poss} cat", "had a bad dream",             "got sick",
    "tore {poss} new shirt",     "was left out of the game",    "lost {poss} balloon",
    "spilled {poss} juice",      "could not go to the party",   "saw {poss} friend move away",
    "had to stay inside",        "broke {poss} kite",           "forgot {poss} lunch",
    "lost {poss} hat",           "got a bad grade",             "saw {poss} plant die",
    "missed {poss} mom",         "ripped {poss} drawing",       "had {poss} bike stolen",
};
constexpr size_t kHeldOutEvents = 6;
const char* const kSentimentFrames[] = {" was", " felt"};

std::string fill_event(std::string event, bool she) {
  size_t at = event.find("{poss}");
  if (at != std::string::npos) event.replace(at, 6, she ? "her" : "his");
  return event;
}

std::vector<Example> sentiment_pool(bool held_out) {
  constexpr size_t kNameCount = sizeof(kNames) / sizeof(kNames[0]);
  constexpr size_t kEventCount = sizeof(kHappyEvents) / sizeof(kHappyEvents[0]);
  static_assert(kEventCount == sizeof(kSadEvents) / sizeof(kSadEvents[0]), "as many happy as sad events");
  std::vector<Example> pool;
  for (size_t n = 0; n < kNameCount; ++n) {
    if ((n >= kNameCount - kHeldOutNames) != held_out) continue;
    const Person& person = kNames[n];
    for (size_t e = 0; e < kEventCount; ++e) {
      if ((e >= kEventCount - kHeldOutEvents) != held_out) continue;
      for (int label = 0; label < 2; ++label) {
        const char* event = label == 0 ? kHappyEvents[e] : kSadEvents[e];
        for (const char* frame : kSentimentFrames) {
          Example ex;
          ex.prompt = std::string(person.name) + " " + fill_event(event, person.she) + ". " +
                      (person.she ? "She" : "He") + frame;
          ex.choices = {" happy.", " sad."};
          ex.label = label;
          pool.push_back(std::move(ex));
        }
      }
    }
  }
  return pool;
}

TaskSplits make_sentiment(const SplitSizes& sizes, std::mt19937_64& rng) {
  // Train and validation share the seen names and events (disjoint prompts); test uses only held-out ones.
  TaskSplits splits = split_distinct("sentiment", sentiment_pool(false), {sizes.train, sizes.validation, 0}, rng);
  TaskSplits held_out = split_distinct("sentiment (held-out test)", sentiment_pool(true), {sizes.test, 0, 0}, rng);
  splits.test = std::move(held_out.train);
  return splits;
}

// ---- add, reverse, sort ----

TaskSplits make_add(const SplitSizes& sizes, std::mt19937_64& rng) {
  std::vector<Example> pool;
  for (int a = 0; a < 100; ++a) {
    for (int b = 0; b < 100; ++b) {
      pool.push_back(generation(std::to_string(a) + " + " + std::to_string(b) + " =", std::to_string(a + b)));
    }
  }
  return split_distinct("add", std::move(pool), sizes, rng);
}

// Distinct random lowercase words of 3 to 6 letters, in the order drawn.
std::vector<std::string> random_words(int64_t count, std::mt19937_64& rng) {
  std::set<std::string> seen;
  std::vector<std::string> words;
  while (static_cast<int64_t>(words.size()) < count) {
    std::string word(3 + uniform_below(rng, 4), 'a');
    for (char& c : word) c = static_cast<char>('a' + uniform_below(rng, 26));
    if (seen.insert(word).second) words.push_back(word);
  }
  return words;
}

TaskSplits make_word_task(bool sort_letters, const SplitSizes& sizes, std::mt19937_64& rng) {
  // Millions of possible words, so drawing distinct words is already a disjoint split.
  std::vector<Example> pool;
  for (const std::string& word : random_words(sizes.total(), rng)) {
    std::string answer = word;
    if (sort_letters) {
      std::sort(answer.begin(), answer.end());
    } else {
      std::reverse(answer.begin(), answer.end());
    }
    pool.push_back(generation((sort_letters ? "Sort " : "Reverse ") + word + ":", answer));
  }
  TaskSplits splits;
  splits.train.assign(pool.begin(), pool.begin() + sizes.train);
  splits.validation.assign(pool.begin() + sizes.train, pool.begin() + sizes.train + sizes.validation);
  splits.test.assign(pool.begin() + sizes.train + sizes.validation, pool.end());
  return splits;
}

// ---- langid ----

const std::pair<const char*, const char*> kLanguages[] = {
    {"de", "German"}, {"fr", "French"}, {"es", "Spanish"}, {"it", "Italian"},
    {"nl", "Dutch"},  {"pt", "Portuguese"}, {"pl", "Polish"}, {"sv", "Swedish"},
};
constexpr size_t kMinLanguages = 6;

bool valid_utf8(const std::string& text) {
  size_t i = 0;
  while (i < text.size()) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    size_t extra;
    if (c < 0x80) {
      extra = 0;
    } else if (c >= 0xc2 && c <= 0xdf) {
      extra = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
      extra = 2;
    } else if (c >= 0xf0 && c <= 0xf4) {
      extra = 3;
    } else {
      return false;
    }
    if (text.size() - i <= extra) return false;
    for (size_t k = 1; k <= extra; ++k) {
      if ((static_cast<unsigned char>(text[i + k]) & 0xc0) != 0x80) return false;
    }
    i += extra + 1;
  }
  return true;
}

// A translated UI string worth asking about: short, really translated, plain text.
bool usable_translation(const MoEntry& entry) {
  const std::string& text = entry.msgstr;
  if (text.size() < 3 || text.size() > 60 || text == entry.msgid) return false;
  if (text.front() == ' ' || text.back() == ' ') return false;  // "Name: " is a label half, not a phrase
  for (char c : text) {
    // '%' and braces are format placeholders; control characters would break the prompt.
    if (c == '%' || c == '{' || c == '}' || (static_cast<unsigned char>(c) < 0x20)) return false;
  }
  return valid_utf8(text);
}

std::vector<std::string> sorted_catalogues(const std::string& dir) {
  std::vector<std::string> paths;
  if (!util::is_directory(dir)) return paths;
  for (const auto& item : std::filesystem::directory_iterator(dir)) {
    if (item.path().extension() == ".mo" && item.is_regular_file()) paths.push_back(item.path().string());
  }
  std::sort(paths.begin(), paths.end());  // directory order differs between file systems
  return paths;
}

TaskSplits make_langid(const BuiltinTaskOptions& options, const SplitSizes& sizes, std::mt19937_64& rng) {
  std::vector<std::string> names;
  std::vector<std::set<std::string>> strings;
  std::vector<std::string> missing;
  for (const auto& [code, name] : kLanguages) {
    std::vector<std::string> files = sorted_catalogues(util::join_path(util::join_path(options.locale_dir, code), "LC_MESSAGES"));
    if (files.empty()) {
      missing.push_back(code);
      continue;
    }
    std::set<std::string> texts;
    for (const std::string& path : files) {
      for (const MoEntry& entry : read_mo_file(path)) {
        if (usable_translation(entry)) texts.insert(entry.msgstr);
      }
    }
    names.push_back(name);
    strings.push_back(std::move(texts));
  }
  std::string missing_text;
  for (const std::string& code : missing) missing_text += " " + code;
  SG_CHECK(names.size() >= kMinLanguages,
           "langid needs gettext catalogues for at least " << kMinLanguages << " languages in " << options.locale_dir
                                                            << " but found " << names.size() << " (missing:" << missing_text
                                                            << "); hint: install translated packages, e.g. language-pack-* or *-l10n");
  // A string found in two languages ("Internet", "OK") has no single answer.
  std::map<std::string, int> language_count;
  for (const auto& texts : strings) {
    for (const std::string& text : texts) ++language_count[text];
  }
  std::vector<std::vector<std::string>> unused(names.size());
  for (size_t l = 0; l < names.size(); ++l) {
    for (const std::string& text : strings[l]) {
      if (language_count[text] == 1) unused[l].push_back(text);
    }
    shuffle(unused[l], rng);
  }
  std::vector<std::string> choices;
  for (const std::string& name : names) choices.push_back(" " + name + ".");
  // Each string is used once across all splits, so test strings never appear in train.
  auto draw = [&](int64_t count) {
    std::vector<Example> out;
    for (int64_t i = 0; i < count; ++i) {
      uint64_t l = uniform_below(rng, names.size());
      SG_CHECK(!unused[l].empty(), "langid ran out of " << names[l] << " strings for --n " << sizes.train
                                                        << "; hint: use a smaller --n");
      Example ex;
      ex.prompt = "Text: " + unused[l].back() + "\nLanguage:";
      ex.choices = choices;
      ex.label = static_cast<int64_t>(l);
      unused[l].pop_back();
      out.push_back(std::move(ex));
    }
    return out;
  };
  TaskSplits splits;
  splits.train = draw(sizes.train);
  splits.validation = draw(sizes.validation);
  splits.test = draw(sizes.test);
  return splits;
}

// ---- country_code, currency ----

std::vector<Example> iso_code_pool(const BuiltinTaskOptions& options, const std::string& file, const std::string& key,
                                   const std::string& code_field) {
  SG_CHECK(util::is_directory(options.iso_codes_dir),
           "iso-codes data not found: " << options.iso_codes_dir << " is missing; " << kIsoCodesHint);
  std::string path = util::join_path(options.iso_codes_dir, file);
  SG_CHECK(util::file_exists(path), "iso-codes data not found: " << path << " is missing; " << kIsoCodesHint);
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(util::read_file(path));
  } catch (const nlohmann::json::exception& e) {
    SG_FAIL(path << ": not valid JSON (" << e.what() << "); " << kIsoCodesHint);
  }
  SG_CHECK(root.is_object() && root.contains(key) && root[key].is_array(),
           path << ": no \"" << key << "\" list; " << kIsoCodesHint);
  std::map<std::string, std::string> code_of;
  std::set<std::string> ambiguous;
  for (const nlohmann::json& item : root[key]) {
    if (!item.contains("name") || !item.contains(code_field)) continue;
    std::string name = item["name"].get<std::string>(), code = item[code_field].get<std::string>();
    std::string lower = name;
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower.find("code") != std::string::npos) continue;  // "codes reserved for testing": not a real entry
    auto [it, inserted] = code_of.emplace(name, code);
    if (!inserted && it->second != code) ambiguous.insert(name);
  }
  std::vector<Example> pool;
  for (const auto& [name, code] : code_of) {
    if (!ambiguous.count(name)) pool.push_back(generation("The code of " + name + " is", code));
  }
  SG_CHECK(!pool.empty(), path << ": no entries with \"name\" and \"" << code_field << "\"; " << kIsoCodesHint);
  return pool;
}

}  // namespace

uint64_t uniform_below(std::mt19937_64& rng, uint64_t n) {
  SG_CHECK(n > 0, "uniform_below needs n > 0");
  // Reject the top partial block of 2^64 so every residue is equally likely.
  const uint64_t limit = std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % n;
  uint64_t x;
  do {
    x = rng();
  } while (x >= limit);
  return x % n;
}

const std::vector<BuiltinTaskInfo>& builtin_tasks() {
  static const std::vector<BuiltinTaskInfo> kTasks = {
      {"opposite", "elicited", "exact_match", "built-in word list",
       "\"The opposite of big is\" -> \" small.\"; 64 word pairs both ways; memorised facts: all splits draw from the same pairs"},
      {"sentiment", "elicited", "choice_accuracy", "built-in story templates",
       "\"Lily got a new puppy. She was\" -> happy/sad; test uses held-out names and events"},
      {"add", "built", "exact_match", "generated",
       "\"12 + 7 =\" -> \" 19.\" for integers below 100; test pairs disjoint from train"},
      {"reverse", "built", "exact_match", "generated",
       "\"Reverse abc:\" -> \" cba.\" for 3-6 random letters; test strings disjoint from train"},
      {"sort", "built", "exact_match", "generated",
       "\"Sort dcab:\" -> \" abcd.\" for 3-6 random letters; test strings disjoint from train"},
      {"langid", "built", "choice_accuracy", "/usr/share/locale/*/LC_MESSAGES/*.mo",
       "which of 6-8 languages a UI string is in; test strings disjoint from train"},
      {"country_code", "built", "exact_match", "iso-codes iso_3166-1.json",
       "\"The code of France is\" -> \" FR.\"; memorised knowledge: all splits draw from the same countries"},
      {"currency", "built", "exact_match", "iso-codes iso_4217.json",
       "\"The code of UAE Dirham is\" -> \" AED.\"; memorised knowledge: all splits draw from the same currencies"},
  };
  return kTasks;
}

TaskSplits make_builtin_task(const std::string& name, const BuiltinTaskOptions& options) {
  std::string names;
  for (const BuiltinTaskInfo& info : builtin_tasks()) names += (names.empty() ? "" : ", ") + info.name;
  bool known = std::any_of(builtin_tasks().begin(), builtin_tasks().end(),
                           [&](const BuiltinTaskInfo& info) { return info.name == name; });
  SG_CHECK(known, "unknown task \"" << name << "\"; hint: the built-in tasks are " << names);
  SplitSizes sizes = split_sizes(options);
  std::mt19937_64 rng(options.seed);
  if (name == "opposite") return make_opposite(sizes, rng);
  if (name == "sentiment") return make_sentiment(sizes, rng);
  if (name == "add") return make_add(sizes, rng);
  if (name == "reverse") return make_word_task(false, sizes, rng);
  if (name == "sort") return make_word_task(true, sizes, rng);
  if (name == "langid") return make_langid(options, sizes, rng);
  if (name == "country_code") {
    return split_memorised(iso_code_pool(options, "iso_3166-1.json", "3166-1", "alpha_2"), sizes, rng);
  }
  return split_memorised(iso_code_pool(options, "iso_4217.json", "4217", "alpha_3"), sizes, rng);
}

}  // namespace sg::data
