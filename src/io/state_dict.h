// StateDict: the ordered name -> tensor map every layer speaks. Names are exactly the HF names.
#pragma once

#include <torch/ordered_dict.h>
#include <ATen/core/Tensor.h>

#include <map>
#include <string>

namespace sg::io {

using StateDict = torch::OrderedDict<std::string, at::Tensor>;
// safetensors "__metadata__": string -> string.
using Metadata = std::map<std::string, std::string>;

}  // namespace sg::io
