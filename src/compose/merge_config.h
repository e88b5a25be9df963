// mergekit-style YAML merge configs -> a MergeSpec. The accepted shape (mergekit's, for the methods
// skillgraft has):
//
//   merge_method: ties            # linear | task_arithmetic | ties | dare_linear | dare_ties | sparse_union
//   base_model: path/to/base      # a checkpoint directory
//   models:
//     - model: path/to/finetuned  # a checkpoint directory or a skill file
//       parameters: {weight: 0.5, density: 0.3}
//     - model: skills/task.safetensors
//   parameters: {lambda: 1.0, density: 0.5, weight: 1.0, normalize: true, rescale: true,
//                int8_mask: true, seed: 0, overlap: mean}
//   dtype: bfloat16               # output dtype (out_dtype wins when both are given)
//
// Global `parameters.weight` / `density` are the defaults of models that do not set their own
// (weight 1, density 1 otherwise). int8_mask is accepted and has no effect (a mergekit memory
// option). A model entry naming the base is left out of the task-vector methods, as mergekit does,
// and kept in linear's average. Relative paths are resolved against the config file's directory.
// Not supported, each a clear error: slices, per-layer parameter lists or filters, unknown fields.
#pragma once

#include <string>

#include "compose/merge.h"

namespace sg::compose {

// Throws sg::Error naming the file, the line and the field for invalid YAML, a missing or unknown
// field, an unknown method, a value of the wrong type. Does not open the models (merge_* does).
MergeSpec read_merge_config(const std::string& path);
// The same from text; `path` is used in messages and to resolve relative paths.
MergeSpec parse_merge_config(const std::string& text, const std::string& path);

}  // namespace sg::compose
