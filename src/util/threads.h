// Thread count: LibTorch defaults to one thread here, so every entry point calls set_threads().
#pragma once

namespace sg::util {

// Sets LibTorch's intra-op thread count: `requested` if > 0, else the number of cores.
// Returns the count in effect.
int set_threads(int requested);

// How many distinct threads one at::parallel_for of ours over `items` items (grain 1) ran on:
// at most min(items, at::get_num_threads()). 1 with several threads set means this code was built
// without OpenMP, so at::parallel_for (an inline template) runs serially.
int parallel_for_threads(int items);

}  // namespace sg::util
