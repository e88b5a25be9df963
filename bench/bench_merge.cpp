// Merge throughput and memory (issue 5 targets: throughput at least 50% of the memcpy bandwidth
// measured in the same command; peak memory under 2x one input's largest tensor plus the output
// buffers). bench/merge.sh runs it.
//
// A synthetic case under a fresh temp directory: a float32 base of --tensors tensors totalling
// --size-mb MB and --inputs fine-tuned checkpoints of the same size (base + N(0, 0.01)), written
// streaming (never whole in memory) and fsynced, so the merge reads them from the page cache.
// Then, in this process:
//   memcpy   --threads threads each copying a slice of a 256 MB buffer (64 MB with --small), and
//            one thread; the median of 5 copies after a warm-up; bandwidth = bytes copied / second.
//            ratio: against the --threads figure; ratio_best_memcpy: against the better of the two
//   merge    compose::merge_to_checkpoint per --methods, alternating, --reps rounds (default 3):
//            throughput = (bytes of base + inputs read + bytes written) / seconds of the median run,
//            with and without the final fsync (disk-bound); peak RSS (VmHWM, reset through
//            /proc/self/clear_refs before each merge) over the RSS before, the largest of the runs;
//            with --cold, the base's and inputs' files are dropped from the page cache before each
//            merge (posix_fadvise DONTNEED; they are clean), so the merge reads them from disk
// One JSON line per method (every run's seconds in runs_seconds). The temp directory is removed at the end (also on error).
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "bench_util.h"
#include "compose/merge.h"
#include "io/hf_checkpoint.h"
#include "io/safetensors_writer.h"
#include "util/error.h"
#include "util/file.h"
#include "util/log.h"
#include "util/threads.h"

namespace {

using sg::bench::median;
using sg::bench::now_seconds;
using sg::bench::reset_peak_rss;
using sg::bench::status_bytes;

struct Options {
  int64_t size_mb = 1024, tensors = 8, inputs = 4, threads = 0, reps = 3;
  std::string methods = "task_arithmetic,ties", dir = "/tmp";
  bool small = false;
  bool cold = false;
};

// Drops a (clean, fsynced) file's pages from the page cache.
void drop_from_page_cache(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  SG_CHECK(fd >= 0, path << ": cannot open: " << std::strerror(errno));
  const int rc = ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
  SG_CHECK(rc == 0, path << ": posix_fadvise: " << std::strerror(rc));
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "--cold") {
      o.cold = true;
      continue;
    }
    if (flag == "--small") {
      o.small = true;
      o.size_mb = 64;
      continue;
    }
    SG_CHECK(i + 1 < argc, flag << " needs a value");
    std::string value = argv[++i];
    if (flag == "--size-mb") o.size_mb = std::stoll(value);
    else if (flag == "--tensors") o.tensors = std::stoll(value);
    else if (flag == "--inputs") o.inputs = std::stoll(value);
    else if (flag == "--threads") o.threads = std::stoll(value);
    else if (flag == "--reps") o.reps = std::stoll(value);
    else if (flag == "--methods") o.methods = value;
    else if (flag == "--dir") o.dir = value;
    else SG_FAIL("unknown flag " << flag << "; hint: --size-mb --tensors --inputs --threads --reps --methods --dir --small --cold");
  }
  SG_CHECK(o.size_mb > 0 && o.tensors > 0 && o.inputs > 0 && o.reps > 0, "sizes and --reps must be > 0");
  return o;
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  std::string item;
  for (char c : text + ",") {
    if (c != ',') {
      item += c;
    } else if (!item.empty()) {
      items.push_back(item);
      item.clear();
    }
  }
  return items;
}

// Removes the directory when it goes out of scope.
struct TempDir {
  std::string path;
  ~TempDir() {
    if (path.empty()) return;
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

// Writes DIR/config.json and a float32 DIR/model.safetensors of `tensors` tensors of `numel` each:
// base values from seed 1, plus N(0, 0.01) from `noise_seed` when noise_seed > 0. One 4M-element
// piece at a time; the same seed always gives the same base.
void write_synthetic(const std::string& dir, int64_t tensors, int64_t numel, uint64_t noise_seed) {
  sg::util::make_directories(dir);
  sg::io::write_json_file(dir + "/config.json", {{"model_type", "llama"}, {"note", "bench_merge synthetic"}});
  std::vector<sg::io::TensorSpec> specs;
  for (int64_t t = 0; t < tensors; ++t) {
    specs.push_back({"model.layers." + std::to_string(t) + ".mlp.up_proj.weight", at::kFloat, {numel}});
  }
  sg::io::SafetensorsStreamWriter writer(dir + "/model.safetensors", specs, {{"format", "pt"}});
  constexpr int64_t kPiece = int64_t{1} << 22;
  for (int64_t t = 0; t < tensors; ++t) {
    for (int64_t begin = 0; begin < numel; begin += kPiece) {
      const int64_t n = std::min(kPiece, numel - begin);
      torch::manual_seed(1000003 * (t + 1) + begin);
      at::Tensor values = torch::randn({n}) * 0.02;
      if (noise_seed > 0) {
        torch::manual_seed(7919 * noise_seed + 1000003 * (t + 1) + begin);
        values += torch::randn({n}) * 0.01;
      }
      writer.write(specs[t].name, begin * 4, values.data_ptr<float>(), n * 4);
    }
  }
  writer.commit();
}

// Bytes copied per second by `threads` threads each memcpy-ing a slice: median of 5 after a warm-up.
double memcpy_bandwidth(int64_t bytes) {
  std::vector<char> source(bytes, 1), target(bytes, 0);
  std::vector<double> seconds;
  for (int rep = 0; rep < 6; ++rep) {
    const double start = now_seconds();
    at::parallel_for(0, bytes, 1 << 20, [&](int64_t begin, int64_t end) {
      std::memcpy(target.data() + begin, source.data() + begin, end - begin);
    });
    if (rep > 0) seconds.push_back(now_seconds() - start);
  }
  return bytes / median(seconds);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options o = parse(argc, argv);
    const int threads = sg::util::set_threads(static_cast<int>(o.threads));
    sg::util::set_quiet(true);
    const int64_t numel = o.size_mb * 1024 * 1024 / 4 / o.tensors;
    const double model_bytes = 4.0 * numel * o.tensors;
    const double largest_tensor = 4.0 * numel;

    TempDir temp;
    std::string pattern = o.dir + "/sg-bench-merge-XXXXXX";
    SG_CHECK(::mkdtemp(pattern.data()) != nullptr, o.dir << ": cannot create a temp directory");
    temp.path = pattern;
    const double write_start = now_seconds();
    write_synthetic(temp.path + "/base", o.tensors, numel, 0);
    sg::compose::MergeSpec spec;
    spec.base = temp.path + "/base";
    for (int64_t i = 0; i < o.inputs; ++i) {
      const std::string dir = temp.path + "/input" + std::to_string(i);
      write_synthetic(dir, o.tensors, numel, i + 1);
      spec.inputs.push_back({dir, 1.0 / o.inputs, -1});
    }
    const double write_seconds = now_seconds() - write_start;

    const double bandwidth = memcpy_bandwidth(o.small ? (int64_t{64} << 20) : (int64_t{256} << 20));
    at::set_num_threads(1);
    const double bandwidth_one = memcpy_bandwidth(o.small ? (int64_t{64} << 20) : (int64_t{256} << 20));
    at::set_num_threads(threads);

    // Methods alternate, --reps rounds; each method's figures are from its median run.
    const std::vector<std::string> methods = split_list(o.methods);
    struct Run {
      sg::compose::MergeReport report;
      int64_t rss_before = 0, peak = 0;
    };
    std::vector<std::vector<Run>> runs(methods.size());
    for (int64_t rep = 0; rep < o.reps; ++rep) {
      for (size_t m = 0; m < methods.size(); ++m) {
        spec.options = sg::compose::MergeOptions();
        spec.options.method = sg::compose::parse_merge_method(methods[m]);
        if (methods[m] == "ties" || methods[m] == "dare_ties" || methods[m] == "dare_linear") spec.options.density = 0.2;
        if (o.cold) {
          drop_from_page_cache(spec.base + "/model.safetensors");
          for (const auto& input : spec.inputs) drop_from_page_cache(input.path + "/model.safetensors");
        }
        Run run;
        run.rss_before = status_bytes("VmRSS");
        reset_peak_rss();
        run.report = sg::compose::merge_to_checkpoint(spec, temp.path + "/out");
        run.peak = status_bytes("VmHWM");
        runs[m].push_back(run);
      }
    }
    for (size_t m = 0; m < methods.size(); ++m) {
      std::vector<Run> sorted = runs[m];
      std::sort(sorted.begin(), sorted.end(), [](const Run& a, const Run& b) { return a.report.seconds < b.report.seconds; });
      const Run& mid = sorted[sorted.size() / 2];
      double peak_increase = 0;
      std::string all_seconds;
      for (const Run& run : runs[m]) {
        peak_increase = std::max(peak_increase, static_cast<double>(run.peak - run.rss_before));
        all_seconds += (all_seconds.empty() ? "" : ", ") + std::to_string(run.report.seconds);
      }
      const sg::compose::MergeReport& report = mid.report;
      const double moved = static_cast<double>(report.bytes_read + report.bytes_written);
      const double throughput = moved / report.seconds;
      const double throughput_no_fsync = moved / (report.seconds - report.commit_seconds);
      std::printf(
          "{\"method\": \"%s\", \"inputs\": %lld, \"tensors\": %lld, \"model_mb\": %.1f, \"largest_tensor_mb\": %.1f, "
          "\"threads\": %d, \"seconds\": %.3f, \"runs_seconds\": [%s], \"fsync_seconds\": %.3f, \"moved_mb\": %.1f, "
          "\"throughput_gbs\": %.3f, \"throughput_no_fsync_gbs\": %.3f, \"memcpy_gbs\": %.3f, \"memcpy_one_thread_gbs\": %.3f, "
          "\"ratio\": %.3f, \"ratio_no_fsync\": %.3f, \"ratio_best_memcpy\": %.3f, \"rss_before_mb\": %.1f, \"peak_increase_mb\": %.1f, "
          "\"peak_mb\": %.1f, \"budget_mb\": %.1f, \"write_inputs_seconds\": %.1f, \"cold\": %s, \"extra_passes\": %lld}\n",
          methods[m].c_str(), static_cast<long long>(o.inputs), static_cast<long long>(o.tensors), model_bytes / 1048576.0,
          largest_tensor / 1048576.0, threads, report.seconds, all_seconds.c_str(), report.commit_seconds, moved / 1048576.0,
          throughput / 1e9, throughput_no_fsync / 1e9, bandwidth / 1e9, bandwidth_one / 1e9, throughput / bandwidth,
          throughput_no_fsync / bandwidth, throughput / std::max(bandwidth, bandwidth_one), mid.rss_before / 1048576.0, peak_increase / 1048576.0,
          (mid.rss_before + peak_increase) / 1048576.0, (2 * largest_tensor) / 1048576.0, write_seconds,
          o.cold ? "true" : "false", static_cast<long long>(report.extra_passes));
    }
    std::fflush(stdout);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_merge: %s\n", e.what());
    return 1;
  }
}
