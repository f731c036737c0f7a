// Trainer throughput: tokens/s and model FLOP utilisation of the native trainer for a fixed ladder of
// shapes at E = 1 and E = 8, side by side with the same model and step in PyTorch eager
// (bench/trainer_bench.py, run with the same thread count). Prints figures; never passes or fails.
//
//   trainer_bench [--device cpu|cuda] [--threads N] [--steps S] [--warmup W] [--repeats R]
//                 [--shape D,LAYERS,HEADS,SEQ_LEN,BATCH,TOKENIZER ...] [--peak-tflops P]
//                 [--no-python | --python INTERPRETER]
//
// Each shape is measured R times, native and Python alternating, and the medians are compared: on a
// shared 2-core machine one measurement moves by ±15%, and drift would favour whichever side ran first.
// The Python side runs on CPU only. --shape replaces the built-in ladder (BATCH in sequences).
//
// MFU = tokens/s · (6·N_act + 6·n_layers·seq_len·d_model) / peak. The peak is stated with the figures:
// on CUDA the H100/H200 SXM dense bf16 peak (989 TFLOP/s, NVIDIA's datasheet; the H200 has the H100's
// arithmetic) unless --peak-tflops says otherwise; on CPU the fp32 GEMM throughput this machine
// measures (2048² matmul, same threads), since a CPU's paper peak depends on clocks and vector units
// that LibTorch does not report.
//
// Peak GPU memory (CUDA builds of LibTorch, see bench/CMakeLists.txt): the most bytes the caching
// allocator handed to tensors during a measurement and the most it reserved from the driver, as
// torch.cuda.max_memory_allocated() and max_memory_reserved() report them; the largest of the R.
// bench/gpu-check.sh builds and runs this on a GPU machine in one command.
#include <torch/torch.h>
#include <torch/version.h>
#include <unistd.h>

#ifdef MOESWEEP_TORCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <algorithm>
#include <map>
#include <optional>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "moesweep/trainer/data.h"
#include "moesweep/trainer/trainer.h"

namespace {

using moesweep::trainer::RunConfig;
using Clock = std::chrono::steady_clock;

struct Shape {
  std::int64_t d_model, n_layers, n_heads, seq_len, batch_sequences;
  std::string tokenizer;
};

struct Options {
  std::string device = "cpu";
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  int steps = 6;
  int warmup = 2;
  int repeats = 3;
  std::vector<std::string> shapes;  // "D,LAYERS,HEADS,SEQ_LEN,BATCH,TOKENIZER"; empty: the built-in ladder
  double peak_tflops = 0;  // 0: the default for the device
  bool python = true;
  std::string python_interpreter = "/usr/bin/python3";  // Debian's, where python3-torch installs
};

// Times the steps after the warm-up ones, from the progress callbacks.
class StepTimer final : public moesweep::trainer::TrainingObserver {
 public:
  explicit StepTimer(int warmup) : warmup_(warmup) {}
  void on_progress(const moesweep::trainer::Progress& p) override {
    if (p.step == warmup_) {
      start_ = Clock::now();
      start_tokens_ = p.tokens;
    }
    end_ = Clock::now();
    end_tokens_ = p.tokens;
  }
  double tokens_per_s() const {
    return static_cast<double>(end_tokens_ - start_tokens_) /
           std::chrono::duration<double>(end_ - start_).count();
  }

 private:
  int warmup_;
  Clock::time_point start_, end_;
  std::int64_t start_tokens_ = 0, end_tokens_ = 0;
};

RunConfig run_config(const Shape& shape, std::int64_t experts, const Options& options,
                     const std::filesystem::path& dir) {
  RunConfig c;
  c.data.tokenizer = shape.tokenizer;
  c.data.train = (dir / (shape.tokenizer + ".bin")).string();
  c.data.val = c.data.train;
  c.model.d_model = shape.d_model;
  c.model.n_layers = shape.n_layers;
  c.model.n_heads = shape.n_heads;
  c.model.experts = experts;
  c.model.seq_len = shape.seq_len;
  c.model.vocab_size = moesweep::trainer::vocab_size_of(shape.tokenizer);
  c.train.batch_tokens = shape.batch_sequences * shape.seq_len;
  c.train.tokens = (options.steps + options.warmup) * c.train.batch_tokens;
  c.train.lr = 1e-3;
  c.train.warmup_tokens = 0;
  c.train.eval_tokens = shape.seq_len;
  c.train.checkpoint_every_tokens = 0;
  return c;
}

// Dense fp32 GEMM throughput of this machine with the benchmark's thread count (TFLOP/s).
double measured_cpu_peak_tflops() {
  const auto a = torch::randn({2048, 2048}), b = torch::randn({2048, 2048});
  torch::mm(a, b);
  const auto start = Clock::now();
  const int repeats = 5;
  for (int i = 0; i < repeats; ++i) torch::mm(a, b);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return repeats * 2.0 * 2048.0 * 2048.0 * 2048.0 / seconds / 1e12;
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown CPU";
}

std::string shape_key(const Shape& s, std::int64_t experts) {
  return std::to_string(s.d_model) + "," + std::to_string(s.n_layers) + "," + std::to_string(s.n_heads) +
         "," + std::to_string(experts) + "," + std::to_string(s.seq_len) + "," +
         std::to_string(s.batch_sequences) + "," +
         std::to_string(moesweep::trainer::vocab_size_of(s.tokenizer));
}

// tokens/s of the PyTorch-eager side by shape key; empty when python3-torch is unavailable.
std::map<std::string, double> python_tokens_per_s(const std::vector<std::string>& keys,
                                                  const Options& options) {
  std::string command = options.python_interpreter + " " MOESWEEP_BENCH_DIR "/trainer_bench.py --threads " +
                        std::to_string(options.threads) + " --steps " + std::to_string(options.steps) +
                        " --warmup " + std::to_string(options.warmup);
  for (const auto& key : keys) command += " " + key;
  command += " 2>&1";
  std::map<std::string, double> rates;
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), pclose);
  if (!pipe) return rates;
  char buffer[4096];
  std::string output;
  while (std::fgets(buffer, sizeof buffer, pipe.get()) != nullptr) {
    const std::string line = buffer;
    const auto parsed = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (parsed.is_object() && parsed.contains("tokens_per_s")) {
      rates[parsed["shape"].get<std::string>()] = parsed["tokens_per_s"].get<double>();
    } else {
      output += line;
    }
  }
  if (rates.empty())
    std::printf("PyTorch eager side unavailable (apt-get install python3-torch):\n%s\n", output.c_str());
  return rates;
}

// "512,8,8,512,64,gpt2" -> d_model 512, 8 layers, 8 heads, seq_len 512, 64 sequences, GPT-2 vocabulary.
Shape parse_shape(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> fields;
  for (std::string field; std::getline(in, field, ',');) fields.push_back(field);
  Shape shape{};
  try {
    if (fields.size() != 6) throw std::invalid_argument("six fields");
    shape = {std::stoll(fields[0]), std::stoll(fields[1]), std::stoll(fields[2]),
             std::stoll(fields[3]), std::stoll(fields[4]), fields[5]};
  } catch (const std::exception&) {
    throw CLI::ValidationError("--shape", "'" + text + "' is not D,LAYERS,HEADS,SEQ_LEN,BATCH,TOKENIZER");
  }
  if (moesweep::trainer::vocab_size_of(shape.tokenizer) <= 0)
    throw CLI::ValidationError("--shape", "unknown tokenizer '" + shape.tokenizer + "' (byte or gpt2)");
  return shape;
}

// Peak GPU memory of the measurements since the last reset, from LibTorch's CUDA caching allocator;
// nothing on CPU or without a CUDA build of LibTorch.
struct PeakMemory {
  double allocated_gib = 0, reserved_gib = 0;
};

void reset_peak_memory(const torch::Device& device) {
#ifdef MOESWEEP_TORCH_CUDA
  if (!device.is_cuda()) return;
  c10::cuda::CUDACachingAllocator::emptyCache();  // reserved memory of the previous shape goes back
  c10::cuda::CUDACachingAllocator::resetPeakStats(device.has_index() ? device.index()
                                                                     : c10::cuda::current_device());
#endif
}

std::optional<PeakMemory> peak_memory(const torch::Device& device) {
#ifdef MOESWEEP_TORCH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(
        device.has_index() ? device.index() : c10::cuda::current_device());
    // Element 0 of each StatArray is StatType::AGGREGATE: all pools, as torch.cuda.max_memory_* report.
    constexpr double gib = 1024.0 * 1024.0 * 1024.0;
    return PeakMemory{static_cast<double>(stats.allocated_bytes[0].peak) / gib,
                      static_cast<double>(stats.reserved_bytes[0].peak) / gib};
  }
#endif
  return std::nullopt;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const auto n = values.size();
  return n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"moesweep trainer benchmark: tokens/s and MFU, native vs PyTorch eager"};
  Options options;
  app.add_option("--device", options.device, "cpu or cuda")->capture_default_str();
  app.add_option("--threads", options.threads, "intra-op threads, both sides")->capture_default_str();
  app.add_option("--steps", options.steps, "timed steps per shape")->capture_default_str();
  app.add_option("--warmup", options.warmup, "untimed steps first")->capture_default_str();
  app.add_option("--repeats", options.repeats, "measurements per shape and side (medians are reported)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--shape", options.shapes,
                 "D,LAYERS,HEADS,SEQ_LEN,BATCH,TOKENIZER instead of the built-in ladder (repeatable)");
  app.add_option("--peak-tflops", options.peak_tflops,
                 "device peak for MFU (default: see the header comment)");
  app.add_flag("!--no-python", options.python, "skip the PyTorch eager comparison");
  app.add_option("--python", options.python_interpreter, "interpreter with torch for the comparison")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  torch::set_num_threads(options.threads);
  const bool cuda = options.device.rfind("cuda", 0) == 0;
  // CPU: small shapes with the byte vocabulary (a step takes about a second on two cores).
  // CUDA: the d_model 512, 8 layers with GPT-2's vocabulary, in bf16.
  std::vector<Shape> ladder =
      cuda ? std::vector<Shape>{{512, 8, 8, 512, 64, "gpt2"}}
           : std::vector<Shape>{
                 {64, 2, 4, 128, 16, "byte"}, {128, 4, 4, 128, 16, "byte"}, {256, 4, 8, 128, 16, "byte"}};
  if (!options.shapes.empty()) {
    ladder.clear();
    try {
      for (const auto& text : options.shapes) ladder.push_back(parse_shape(text));
    } catch (const CLI::ParseError& e) {
      return app.exit(e);
    }
  }
  const torch::Device device(options.device);
  if (cuda) {
    if (!torch::cuda::is_available()) {
      std::fprintf(stderr, "trainer_bench: --device %s, but this LibTorch (%s) sees no CUDA device\n",
                   options.device.c_str(), TORCH_VERSION);
      return 1;
    }
    torch::zeros({1}, torch::TensorOptions().device(device));  // initialises CUDA and its allocator
  }
  const double peak = options.peak_tflops > 0 ? options.peak_tflops
                      : cuda                  ? 989.0
                                              : measured_cpu_peak_tflops();

  std::printf("machine: %s, %u hardware threads; device %s; LibTorch %s; %d intra-op threads\n",
              cpu_model().c_str(), std::thread::hardware_concurrency(), options.device.c_str(), TORCH_VERSION,
              options.threads);
  std::printf("peak for MFU: %.3f TFLOP/s (%s)\n", peak,
              options.peak_tflops > 0 ? "given"
              : cuda                  ? "H100/H200 SXM dense bf16"
                                      : "measured fp32 2048² GEMM");
  std::printf("%d timed steps after %d warm-up steps per shape; median of %d measurements per side, %s\n\n",
              options.steps, options.warmup, options.repeats,
              options.python && !cuda ? "native and Python alternating" : "native only");

  const auto dir = std::filesystem::temp_directory_path() / ("moesweep-bench-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  for (const auto* tokenizer : {"byte", "gpt2"}) {
    const auto vocab = moesweep::trainer::vocab_size_of(tokenizer);
    std::vector<std::uint16_t> tokens(1 << 20);
    for (std::size_t i = 0; i < tokens.size(); ++i)
      tokens[i] = static_cast<std::uint16_t>((i * 2654435761u >> 7) % vocab);
    moesweep::trainer::write_shard(dir / (std::string(tokenizer) + ".bin"), tokenizer, tokens);
  }

  struct Row {
    Shape shape;
    std::int64_t experts, n_act;
    double tokens_per_s, mfu;
    std::optional<PeakMemory> memory{};  // CUDA only
    std::optional<double> python_tokens_per_s{};
    double lowest_ratio = 0, highest_ratio = 0;  // of the alternating pairs
  };
  std::vector<Row> rows;
  bool python_available = options.python && !cuda;
  for (const auto& shape : ladder) {
    for (const std::int64_t experts : {1, 8}) {
      const auto config = run_config(shape, experts, options, dir);
      moesweep::trainer::TrainOptions train_options;
      train_options.device = options.device;
      train_options.threads = options.threads;
      std::vector<double> native, python, ratios;
      std::optional<PeakMemory> memory;
      for (int repeat = 0; repeat < options.repeats; ++repeat) {
        StepTimer timer(options.warmup);
        reset_peak_memory(device);
        moesweep::trainer::train(config, train_options, timer);
        native.push_back(timer.tokens_per_s());
        if (const auto measured = peak_memory(device)) {
          if (!memory) memory = PeakMemory{};
          memory->allocated_gib = std::max(memory->allocated_gib, measured->allocated_gib);
          memory->reserved_gib = std::max(memory->reserved_gib, measured->reserved_gib);
        }
        if (!python_available) continue;
        const auto key = shape_key(shape, experts);
        const auto rates = python_tokens_per_s({key}, options);
        if (rates.count(key) == 0) {
          python_available = false;
          continue;
        }
        python.push_back(rates.at(key));
        ratios.push_back(native.back() / python.back());
      }
      const auto n_act = moesweep::trainer::active_params(config.model);
      const double flops_per_token =
          6.0 * static_cast<double>(n_act) +
          6.0 * static_cast<double>(shape.n_layers * shape.seq_len * shape.d_model);
      Row row{shape, experts, n_act, median(native), median(native) * flops_per_token / (peak * 1e12)};
      row.memory = memory;
      if (python_available && !python.empty()) {
        row.python_tokens_per_s = median(python);
        row.lowest_ratio = *std::min_element(ratios.begin(), ratios.end());
        row.highest_ratio = *std::max_element(ratios.begin(), ratios.end());
      }
      rows.push_back(row);
    }
  }
  std::filesystem::remove_all(dir);

  std::printf("%7s %6s %5s %7s %6s %3s %9s %12s %7s %8s %8s %12s %8s %13s\n", "d_model", "layers", "heads",
              "seq_len", "batch", "E", "N_act", "native tok/s", "MFU", "peak GiB", "rsvd GiB", "python tok/s",
              "C++/py", "pairs min-max");
  for (const auto& row : rows) {
    std::printf("%7lld %6lld %5lld %7lld %6lld %3lld %9lld %12.0f %6.2f%%",
                static_cast<long long>(row.shape.d_model), static_cast<long long>(row.shape.n_layers),
                static_cast<long long>(row.shape.n_heads), static_cast<long long>(row.shape.seq_len),
                static_cast<long long>(row.shape.batch_sequences), static_cast<long long>(row.experts),
                static_cast<long long>(row.n_act), row.tokens_per_s, 100.0 * row.mfu);
    if (row.memory) {
      std::printf(" %8.2f %8.2f", row.memory->allocated_gib, row.memory->reserved_gib);
    } else {
      std::printf(" %8s %8s", "-", "-");
    }
    if (row.python_tokens_per_s) {
      std::printf(" %12.0f %8.2f %6.2f-%-6.2f\n", *row.python_tokens_per_s,
                  row.tokens_per_s / *row.python_tokens_per_s, row.lowest_ratio, row.highest_ratio);
    } else {
      std::printf(" %12s %8s %13s\n", "-", "-", "-");
    }
  }
  if (cuda && rows.front().memory) {
    std::printf("\npeak GiB: the most GPU memory held by tensors during one measurement "
                "(torch.cuda.max_memory_allocated); rsvd GiB: the most the caching allocator reserved.\n");
  } else if (cuda) {
    std::printf("\npeak GPU memory: not available (LibTorch without CUDA targets at build time)\n");
  }
  return 0;
}
