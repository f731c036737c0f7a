#include <array>
#include <charconv>
#include <cmath>
#include <fstream>
#include <sstream>

#include "moesweep/analysis/runs.h"
#include "moesweep/input_error.h"

namespace moesweep::analysis {
namespace {

std::string trim(std::string text) {
  const auto first = text.find_first_not_of(" \t\r\"");
  if (first == std::string::npos) return "";
  const auto last = text.find_last_not_of(" \t\r\"");
  return text.substr(first, last - first + 1);
}

std::vector<std::string> split_fields(const std::string& line) {
  std::vector<std::string> fields;
  std::stringstream stream(line);
  std::string field;
  while (std::getline(stream, field, ',')) fields.push_back(trim(field));
  if (!line.empty() && line.back() == ',') fields.emplace_back();
  return fields;
}

}  // namespace

std::vector<Run> read_runs_csv(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw InputError::at(path, 0, "", "cannot open the CSV file");

  constexpr std::array<const char*, 4> kColumns = {"n_act", "tokens", "experts", "loss"};
  std::string line;
  long line_number = 0;
  // Blank lines and comment lines (starting with '#', as in ../shared/data's tables) are skipped; the
  // header is the first other line.
  auto skipped = [](const std::string& text) {
    const std::string t = trim(text);
    return t.empty() || t.front() == '#';
  };
  while (std::getline(in, line)) {
    ++line_number;
    if (!skipped(line)) break;
  }
  const std::vector<std::string> header = split_fields(line);
  std::array<std::size_t, 4> column_of{};
  for (std::size_t c = 0; c < kColumns.size(); ++c) {
    std::size_t found = header.size();
    for (std::size_t h = 0; h < header.size(); ++h)
      if (header[h] == kColumns[c]) found = h;
    if (found == header.size())
      throw InputError::at(path, line_number, kColumns[c],
                           "missing column (the header must name n_act,tokens,experts,loss)");
    column_of[c] = found;
  }

  std::vector<Run> runs;
  while (std::getline(in, line)) {
    ++line_number;
    if (skipped(line)) continue;
    const std::vector<std::string> fields = split_fields(line);
    std::array<double, 4> values{};
    for (std::size_t c = 0; c < kColumns.size(); ++c) {
      if (column_of[c] >= fields.size() || fields[column_of[c]].empty())
        throw InputError::at(path, line_number, kColumns[c], "missing value");
      const std::string& text = fields[column_of[c]];
      double value = 0;
      const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
      if (error != std::errc() || end != text.data() + text.size() || !std::isfinite(value))
        throw InputError::at(path, line_number, kColumns[c], "'" + text + "' is not a number");
      if (!(value > 0)) throw InputError::at(path, line_number, kColumns[c], "must be positive, got " + text);
      values[c] = value;
    }
    if (values[2] < 1) throw InputError::at(path, line_number, "experts", "must be at least 1");
    runs.push_back(Run{values[0], values[1], values[2], values[3], path + ":" + std::to_string(line_number)});
  }
  if (runs.empty()) throw InputError::at(path, line_number, "", "no runs after the header");
  return runs;
}

}  // namespace moesweep::analysis
