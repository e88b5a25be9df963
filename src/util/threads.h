// Thread count: LibTorch defaults to one thread here, so every entry point calls set_threads().
#pragma once

namespace sg::util {

// Sets LibTorch's intra-op thread count: `requested` if > 0, else the number of cores.
// Returns the count in effect.
int set_threads(int requested);

}  // namespace sg::util
