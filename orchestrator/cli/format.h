#pragma once
// Small text helpers shared by the subcommands' human-readable output.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

namespace moesweep::cli {

// 78726144 → "78.7M", 8.0e10 → "80.0B".
inline std::string human_count(double v) {
  const char* suffix[] = {"", "K", "M", "B", "T"};
  int i = 0;
  while (std::fabs(v) >= 1000 && i < 4) v /= 1000, ++i;
  char buf[32];
  std::snprintf(buf, sizeof buf, i == 0 ? "%.0f%s" : "%.1f%s", v, suffix[i]);
  return buf;
}

inline std::string scientific(double v, int digits = 2) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*e", digits, v);
  return buf;
}

// 3725 → "1h02m", 95 → "1m35s", 7 → "7s".
inline std::string human_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "unknown";
  auto s = static_cast<std::int64_t>(std::llround(seconds));
  char buf[32];
  if (s >= 86400)
    std::snprintf(buf, sizeof buf, "%lldd%02lldh", static_cast<long long>(s / 86400),
                  static_cast<long long>(s % 86400 / 3600));
  else if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>(s % 3600 / 60));
  else if (s >= 60)
    std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  else
    std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(s));
  return buf;
}

}  // namespace moesweep::cli
