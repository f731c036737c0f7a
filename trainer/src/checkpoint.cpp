#include "checkpoint.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <regex>
#include <sstream>

#include "moesweep/trainer/file_io.h"
#include "moesweep/input_error.h"
#include "moesweep/trainer/data.h"
#include "moesweep/trainer/trainer.h"

namespace moesweep::trainer {
namespace {

constexpr char kMagic[8] = {'M', 'O', 'E', 'S', 'C', 'K', 'P', 'T'};
constexpr std::uint32_t kVersion = 1;

struct CheckpointHeader {
  char magic[8];
  std::uint32_t version;
  std::uint32_t zero;
  std::uint64_t step;
  std::uint64_t tokens;
  std::uint64_t config_size;
  std::uint64_t payload_size;
  std::uint64_t checksum;
};

std::uint64_t checksum_of(std::string_view config, std::string_view payload) {
  const std::uint64_t parts[2] = {checksum64(config.data(), config.size()),
                                  checksum64(payload.data(), payload.size())};
  return checksum64(parts, sizeof parts);
}

struct ParsedCheckpoint {
  CheckpointHeader header;
  std::string_view config;
  std::string_view payload;
};

// nullopt when the bytes are not one complete checkpoint whose checksum matches (a torn write).
std::optional<ParsedCheckpoint> parse_checkpoint(const std::string& bytes) {
  ParsedCheckpoint parsed{};
  if (bytes.size() < sizeof parsed.header) return std::nullopt;
  std::memcpy(&parsed.header, bytes.data(), sizeof parsed.header);
  const auto& header = parsed.header;
  if (std::memcmp(header.magic, kMagic, sizeof kMagic) != 0 || header.version != kVersion)
    return std::nullopt;
  if (bytes.size() != sizeof header + header.config_size + header.payload_size) return std::nullopt;
  parsed.config = std::string_view(bytes).substr(sizeof header, header.config_size);
  parsed.payload = std::string_view(bytes).substr(sizeof header + header.config_size);
  if (checksum_of(parsed.config, parsed.payload) != header.checksum) return std::nullopt;
  return parsed;
}

// Checkpoints in `dir`, newest (highest step) first.
std::vector<std::filesystem::path> checkpoint_files(const std::filesystem::path& dir) {
  static const std::regex name("ckpt-[0-9]{12}\\.pt");
  std::vector<std::filesystem::path> files;
  if (!std::filesystem::is_directory(dir)) return files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.is_regular_file() && std::regex_match(entry.path().filename().string(), name))
      files.push_back(entry.path());
  }
  std::sort(files.rbegin(), files.rend());  // zero-padded step: name order is step order
  return files;
}

// The first line where two canonical config texts differ, for a readable error.
std::string first_difference(const std::string& a, const std::string& b) {
  std::istringstream lines_a(a), lines_b(b);
  std::string line_a, line_b;
  while (true) {
    const bool more_a = static_cast<bool>(std::getline(lines_a, line_a));
    const bool more_b = static_cast<bool>(std::getline(lines_b, line_b));
    if (!more_a && !more_b) return "";
    if (!more_a) line_a = "(nothing)";
    if (!more_b) line_b = "(nothing)";
    if (line_a != line_b) return "checkpoint has '" + line_a + "', this run has '" + line_b + "'";
  }
}

// Loads a verified checkpoint into model and optimizer (and restores the RNG state).
LoadedCheckpoint restore(const std::filesystem::path& path, const ParsedCheckpoint& parsed,
                         const std::string& config_text, MoeTransformerImpl& model,
                         torch::optim::Optimizer& optimizer) {
  const auto& [header, config, payload] = parsed;
  if (config != config_text && config.rfind(kRecipeLine, 0) != 0) {
    throw InputError(path.string() +
                     ": checkpoint was written by moesweep's older training recipe (per-sequence routing "
                     "that kept tokens by probability); it cannot be resumed: remove it to train the run afresh");
  }
  if (config != config_text) {
    throw InputError(path.string() + ": checkpoint of another run config (" +
                     first_difference(std::string(config), config_text) + ")");
  }
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(payload.data(), payload.size());
    model.load(archive);
    torch::serialize::InputArchive optimizer_archive;
    archive.read("optimizer", optimizer_archive);
    optimizer.load(optimizer_archive);
    torch::Tensor rng_state;
    archive.read("rng_cpu", rng_state);
    at::Generator generator = at::detail::getDefaultCPUGenerator();  // a handle to the process's generator
    generator.set_state(rng_state);
  } catch (const c10::Error& e) {
    throw InputError(path.string() + ": checkpoint does not match the model: " + e.what_without_backtrace());
  }
  return LoadedCheckpoint{path,
                          {static_cast<std::int64_t>(header.step), static_cast<std::int64_t>(header.tokens)}};
}

}  // namespace

std::filesystem::path checkpoint_path(const std::filesystem::path& dir, std::int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "ckpt-%012lld.pt", static_cast<long long>(step));
  return dir / name;
}

std::vector<std::int64_t> checkpoint_steps(const std::filesystem::path& dir) {
  std::vector<std::int64_t> steps;
  for (const auto& path : checkpoint_files(dir))
    steps.push_back(std::stoll(path.filename().string().substr(5, 12)));
  std::sort(steps.begin(), steps.end());
  return steps;
}

LoadedCheckpoint load_checkpoint_file(const std::filesystem::path& path, const std::string& config_text,
                                      MoeTransformerImpl& model, torch::optim::Optimizer& optimizer) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UnusableCheckpoint(path.string() + ": no such checkpoint");
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto parsed = parse_checkpoint(bytes);
  if (!parsed) throw UnusableCheckpoint(path.string() + ": checkpoint is torn or fails its checksum");
  return restore(path, *parsed, config_text, model, optimizer);
}

std::filesystem::path save_checkpoint(const std::filesystem::path& dir, const CheckpointPosition& position,
                                      const std::string& config_text, MoeTransformerImpl& model,
                                      torch::optim::Optimizer& optimizer, std::size_t keep,
                                      const std::function<bool()>& may_publish) {
  torch::serialize::OutputArchive archive;
  model.save(archive);
  torch::serialize::OutputArchive optimizer_archive;
  optimizer.save(optimizer_archive);
  archive.write("optimizer", optimizer_archive);
  archive.write("rng_cpu", at::detail::getDefaultCPUGenerator().get_state());
  std::string payload;
  archive.save_to([&payload](const void* data, std::size_t size) {
    payload.append(static_cast<const char*>(data), size);
    return size;
  });

  CheckpointHeader header{};
  std::memcpy(header.magic, kMagic, sizeof kMagic);
  header.version = kVersion;
  header.step = static_cast<std::uint64_t>(position.step);
  header.tokens = static_cast<std::uint64_t>(position.tokens);
  header.config_size = config_text.size();
  header.payload_size = payload.size();
  header.checksum = checksum_of(config_text, payload);

  std::filesystem::create_directories(dir);
  const auto path = checkpoint_path(dir, position.step);
  write_file_atomically(
      path,
      {{&header, sizeof header}, {config_text.data(), config_text.size()}, {payload.data(), payload.size()}},
      may_publish);
  if (keep > 0) {
    const auto files = checkpoint_files(dir);
    for (std::size_t i = keep; i < files.size(); ++i) std::filesystem::remove(files[i]);
  }
  return path;
}

std::optional<LoadedCheckpoint> load_latest_checkpoint(const std::filesystem::path& dir,
                                                       const std::string& config_text,
                                                       MoeTransformerImpl& model,
                                                       torch::optim::Optimizer& optimizer,
                                                       const std::function<void(const std::string&)>& warn) {
  const auto files = checkpoint_files(dir);
  for (const auto& path : files) {
    std::ifstream in(path, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto parsed = parse_checkpoint(bytes);
    if (!parsed) {
      warn("checkpoint " + path.string() + " is torn or corrupt; falling back to an older one");
      continue;
    }
    return restore(path, *parsed, config_text, model, optimizer);
  }
  if (!files.empty())
    throw InputError(dir.string() + ": every checkpoint is torn or corrupt; remove them to start over");
  return std::nullopt;
}

}  // namespace moesweep::trainer
