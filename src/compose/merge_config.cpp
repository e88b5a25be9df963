#include "compose/merge_config.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <filesystem>
#include <set>

#include "util/error.h"
#include "util/file.h"

namespace sg::compose {

namespace {

const std::set<std::string> kTopFields = {"merge_method", "base_model", "models", "parameters", "dtype", "out_dtype"};
const std::set<std::string> kModelFields = {"model", "parameters"};
const std::set<std::string> kModelParameters = {"weight", "density"};
const std::set<std::string> kGlobalParameters = {"lambda", "density", "weight", "normalize", "rescale",
                                                 "int8_mask", "seed", "overlap"};

std::string join(const std::set<std::string>& names) {
  std::string text;
  for (const std::string& name : names) text += (text.empty() ? "" : ", ") + name;
  return text;
}

class ConfigReader {
 public:
  explicit ConfigReader(std::string path) : path_(std::move(path)) {
    std::filesystem::path parent = std::filesystem::path(path_).parent_path();
    dir_ = parent.empty() ? "." : parent.string();
  }

  // "FILE:LINE: FIELD" for messages (yaml-cpp lines are 0-based).
  std::string at(const YAML::Node& node, const std::string& field) const {
    const YAML::Mark mark = node.Mark();
    return path_ + (mark.line >= 0 ? ":" + std::to_string(mark.line + 1) : "") + ": " + field;
  }

  void check_map(const YAML::Node& node, const std::string& field, const std::set<std::string>& allowed) const {
    SG_CHECK(node.IsMap(), at(node, field) << " must be a mapping (key: value lines)");
    for (auto it = node.begin(); it != node.end(); ++it) {
      const std::string key = it->first.as<std::string>();
      if (field.empty() && key == "slices") {
        SG_FAIL(at(it->first, "slices") << ": layer slices are not supported; hint: list whole models under `models`");
      }
      SG_CHECK(allowed.count(key), at(it->first, (field.empty() ? "" : field + ".") + key)
                                       << ": unknown field; hint: supported here: " << join(allowed));
    }
  }

  std::string text(const YAML::Node& node, const std::string& field) const {
    SG_CHECK(node.IsScalar(), at(node, field) << " must be a single value");
    return node.as<std::string>();
  }

  double number(const YAML::Node& node, const std::string& field) const {
    SG_CHECK(!node.IsSequence() && !node.IsMap(),
             at(node, field) << ": per-layer values (lists or filters) are not supported; hint: give one number");
    double value = 0;
    try {
      value = node.as<double>();
    } catch (const YAML::Exception&) {
      SG_FAIL(at(node, field) << ": \"" << node.as<std::string>() << "\" is not a number");
    }
    SG_CHECK(std::isfinite(value), at(node, field) << ": " << value << " is not a finite number");
    return value;
  }

  bool boolean(const YAML::Node& node, const std::string& field) const {
    SG_CHECK(node.IsScalar(), at(node, field) << " must be true or false");
    try {
      return node.as<bool>();
    } catch (const YAML::Exception&) {
      SG_FAIL(at(node, field) << ": \"" << node.as<std::string>() << "\" is not true or false");
    }
  }

  // A path from the config, resolved against the config's directory; must exist.
  std::string existing_path(const YAML::Node& node, const std::string& field) const {
    const std::string value = text(node, field);
    SG_CHECK(!value.empty(), at(node, field) << " is empty; hint: a checkpoint directory or skill file");
    std::filesystem::path path(value);
    const std::string resolved = path.is_absolute() ? value : util::join_path(dir_, value);
    SG_CHECK(util::file_exists(resolved), at(node, field) << ": " << resolved
                                                          << " does not exist; hint: relative paths are read from "
                                                             "the config file's directory ("
                                                          << dir_ << ")");
    return resolved;
  }

  MergeSpec parse(const std::string& content) const {
    YAML::Node root;
    try {
      root = YAML::Load(content);
    } catch (const YAML::ParserException& e) {
      SG_FAIL(path_ << ":" << e.mark.line + 1 << ":" << e.mark.column + 1 << ": not valid YAML (" << e.msg << ")");
    }
    SG_CHECK(root.IsMap(), path_ << ": expected a mapping with merge_method, base_model and models; hint: see "
                                    "skillgraft merge --help");
    check_map(root, "", kTopFields);
    MergeSpec spec;
    SG_CHECK(root["merge_method"], path_ << ": merge_method is missing; hint: one of " << merge_method_list());
    const YAML::Node method_node = root["merge_method"];
    try {
      spec.options.method = parse_merge_method(text(method_node, "merge_method"));
    } catch (const sg::Error& e) {
      SG_FAIL(at(method_node, "merge_method") << ": " << e.what());
    }
    SG_CHECK(root["base_model"], path_ << ": base_model is missing; hint: the checkpoint directory every model was "
                                          "fine-tuned from");
    spec.base = existing_path(root["base_model"], "base_model");

    double default_weight = 1.0;
    if (root["parameters"]) {
      const YAML::Node parameters = root["parameters"];
      check_map(parameters, "parameters", kGlobalParameters);
      for (auto it = parameters.begin(); it != parameters.end(); ++it) {
        const std::string key = it->first.as<std::string>();
        const std::string field = "parameters." + key;
        const YAML::Node& value = it->second;
        if (key == "lambda") {
          spec.options.lambda = number(value, field);
        } else if (key == "density") {
          spec.options.density = number(value, field);
        } else if (key == "weight") {
          default_weight = number(value, field);
        } else if (key == "normalize") {
          spec.options.normalize = boolean(value, field) ? 1 : 0;
        } else if (key == "rescale") {
          spec.options.rescale = boolean(value, field);
        } else if (key == "int8_mask") {
          boolean(value, field);  // a mergekit memory option: no effect here
        } else if (key == "seed") {
          const double seed = number(value, field);
          SG_CHECK(seed >= 0 && seed == std::floor(seed), at(value, field) << ": must be a whole number >= 0");
          spec.options.seed = static_cast<uint64_t>(seed);
        } else if (key == "overlap") {
          try {
            spec.options.overlap = parse_overlap_rule(text(value, field));
          } catch (const sg::Error& e) {
            SG_FAIL(at(value, field) << ": " << e.what());
          }
        }
      }
    }
    for (const char* field : {"dtype", "out_dtype"}) {
      if (!root[field]) continue;
      const std::string dtype = text(root[field], field);
      SG_CHECK(dtype == "float32" || dtype == "bfloat16" || dtype == "float16",
               at(root[field], field) << ": unknown dtype \"" << dtype << "\"; hint: float32, bfloat16 or float16");
      if (std::string(field) == "dtype" && root["out_dtype"]) continue;  // out_dtype wins
      spec.options.dtype = dtype;
    }

    SG_CHECK(root["models"], path_ << ": models is missing; hint: a list of {model: PATH, parameters: {weight: W}}");
    const YAML::Node models = root["models"];
    SG_CHECK(models.IsSequence() && models.size() > 0,
             at(models, "models") << " must be a non-empty list of {model: PATH, parameters: {...}}");
    for (size_t i = 0; i < models.size(); ++i) {
      const YAML::Node entry = models[i];
      const std::string where = "models[" + std::to_string(i) + "]";
      check_map(entry, where, kModelFields);
      SG_CHECK(entry["model"], at(entry, where) << ": no `model`; hint: the checkpoint directory or skill file");
      MergeInputSpec input;
      input.path = existing_path(entry["model"], where + ".model");
      input.weight = default_weight;
      if (entry["parameters"]) {
        const YAML::Node parameters = entry["parameters"];
        check_map(parameters, where + ".parameters", kModelParameters);
        if (parameters["weight"]) input.weight = number(parameters["weight"], where + ".parameters.weight");
        if (parameters["density"]) input.density = number(parameters["density"], where + ".parameters.density");
      }
      std::error_code ec1, ec2;
      const bool is_base = std::filesystem::weakly_canonical(input.path, ec1) ==
                           std::filesystem::weakly_canonical(spec.base, ec2);
      // mergekit leaves the base out of task vectors (its delta is 0) and averages it in linear.
      if (is_base && spec.options.method != MergeMethod::kLinear) continue;
      spec.inputs.push_back(input);
    }
    SG_CHECK(!spec.inputs.empty(), at(models, "models") << ": lists only the base model; hint: add the models to merge");
    return spec;
  }

 private:
  std::string path_;
  std::string dir_;
};

}  // namespace

MergeSpec parse_merge_config(const std::string& text, const std::string& path) {
  return ConfigReader(path).parse(text);
}

MergeSpec read_merge_config(const std::string& path) {
  SG_CHECK(util::file_exists(path), path << ": no such merge config; hint: check --config");
  return parse_merge_config(util::read_file(path), path);
}

}  // namespace sg::compose
