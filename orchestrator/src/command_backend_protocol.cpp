#include "command_backend_protocol.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "spelling.h"

namespace moesweep::orchestrator::command {
namespace {

using nlohmann::json;

// The attempt's placeholders: command_backend.cpp gives their values when it starts a child.
const std::vector<std::string>& attempt_names() {
  static const std::vector<std::string> names = {"run_dir", "attempt", "resume_from", "branch_from",
                                                 "rank",    "ranks",   "master_addr", "master_port",
                                                 "threads", "device",  "devices"};
  return names;
}

// Numbers as JSON writes them: integers exactly, doubles in their shortest round-trip form, so a value
// reads back as the same number in any language.
std::string text_of(const json& value) { return value.is_string() ? value.get<std::string>() : value.dump(); }

// Walks a template: literal text to `literal`, each placeholder's name to `placeholder`. Returns the
// first syntax problem, if any.
template <typename Literal, typename Placeholder>
std::optional<std::string> walk(const std::string& text, Literal literal, Placeholder placeholder) {
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if ((c == '{' || c == '}') && i + 1 < text.size() && text[i + 1] == c) {
      literal(c);
      ++i;
    } else if (c == '}') {
      return "a '}' with no '{' (write '}}' for a literal brace)";
    } else if (c == '{') {
      const std::size_t end = text.find('}', i + 1);
      if (end == std::string::npos) return "a '{' with no '}' (write '{{' for a literal brace)";
      if (auto problem = placeholder(text.substr(i + 1, end - i - 1))) return problem;
      i = end;
    } else {
      literal(c);
    }
  }
  return std::nullopt;
}

std::int64_t count(const json& event, const char* key) {
  const auto it = event.find(key);
  if (it == event.end()) throw ProtocolError(std::string("missing field '") + key + "'");
  if (it->is_number_integer() && it->get<std::int64_t>() >= 0) return it->get<std::int64_t>();
  if (it->is_number_float()) {  // 1e6 is a count too, if whole
    const double v = it->get<double>();
    if (std::isfinite(v) && v >= 0 && v == std::floor(v) && v < 9.0e18) return static_cast<std::int64_t>(v);
  }
  throw ProtocolError(std::string("field '") + key + "' must be a whole number >= 0, got " + it->dump());
}

double finite(const json& event, const char* key) {
  const auto it = event.find(key);
  if (it == event.end()) throw ProtocolError(std::string("missing field '") + key + "'");
  if (!it->is_number() || !std::isfinite(it->get<double>()))
    throw ProtocolError(std::string("field '") + key + "' must be a finite number, got " + it->dump());
  return it->get<double>();
}

std::optional<double> optional_finite(const json& event, const char* key) {
  if (!event.contains(key) || event.at(key).is_null()) return std::nullopt;
  return finite(event, key);
}

}  // namespace

const std::vector<std::string>& placeholder_names() {
  static const std::vector<std::string> names = [] {
    ExpandedRun any;  // the run's names are the keys run_values gives, whatever the run
    std::vector<std::string> all;
    for (const auto& [name, value] : run_values(any)) all.push_back(name);
    for (const std::string& name : attempt_names()) all.push_back(name);
    std::sort(all.begin(), all.end());
    return all;
  }();
  return names;
}

std::optional<std::string> check_template(const std::string& text) {
  const auto& known = placeholder_names();
  return walk(
      text, [](char) {},
      [&](const std::string& name) -> std::optional<std::string> {
        if (std::binary_search(known.begin(), known.end(), name)) return std::nullopt;
        std::string message = "unknown placeholder '{" + name + "}'";
        const std::string best = closest_name(name, known);
        return best.empty() ? message + " (the README's \"Bring your own trainer\" lists them)"
                            : message + "; did you mean '{" + best + "}'?";
      });
}

std::map<std::string, std::string> run_values(const ExpandedRun& run) {
  // The resolved configuration, by canonical_json's sections (the run key's own fields); lr is the
  // resolved rate, not the rule's name.
  json spec = json::parse(canonical_json(run.config));
  spec["train"]["lr"] = run.config.train.lr;
  std::map<std::string, std::string> values;
  for (const char* section : {"data", "model", "train"}) {
    for (const auto& [key, value] : spec.at(section).items()) {
      values[std::string(section) + "." + key] = text_of(value);
      values[key] = text_of(value);  // data.train is {train}; no model or train key is named alike
    }
  }
  values["n_act"] = std::to_string(run.n_act);
  values["n_total"] = std::to_string(run.n_total);
  values["flops"] = json(run.flops).dump();
  values["kind"] = to_string(run.kind);
  values["run_key"] = run.run_key;
  values["trunk_key"] = run.kind == RunKind::branch ? run.trunk_key : "";
  values["branch_tokens"] = std::to_string(run.kind == RunKind::branch ? run.branch_point.tokens : 0);
  std::string points;
  for (const auto& point : run.branch_points) points += (points.empty() ? "" : ",") + std::to_string(point.tokens);
  values["branch_points"] = points;
  return values;
}

std::string expand(const std::string& text, const std::map<std::string, std::string>& values) {
  std::string out;
  const auto problem = walk(
      text, [&](char c) { out += c; },
      [&](const std::string& name) -> std::optional<std::string> {
        const auto it = values.find(name);
        if (it == values.end()) return "no value for placeholder '{" + name + "}'";
        out += it->second;
        return std::nullopt;
      });
  if (problem) throw std::invalid_argument(*problem);
  return out;
}

Event parse_protocol_line(const std::string& line) {
  Event event;
  const std::size_t first = line.find_first_not_of(" \t\r");
  if (first == std::string::npos || line[first] != '{') return event;  // a log line
  json j;
  try {
    j = json::parse(line);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number beyond a double
    throw ProtocolError(e.id == 406 ? "not valid JSON: a number out of range" : "not valid JSON");
  }
  if (!j.is_object()) throw ProtocolError("not a JSON object");
  const auto kind = j.find("event");
  if (kind == j.end()) throw ProtocolError("missing field 'event'");
  if (!kind->is_string()) throw ProtocolError("field 'event' must be a string, got " + kind->dump());
  const std::string name = kind->get<std::string>();
  if (name == "progress") {
    event.kind = Event::Kind::progress;
    event.progress = {count(j, "step"), count(j, "tokens"), finite(j, "loss"), optional_finite(j, "lr"),
                      optional_finite(j, "tokens_per_s")};
  } else if (name == "checkpoint") {
    event.kind = Event::Kind::checkpoint;
    event.checkpoint.tokens = count(j, "tokens");
    const auto path = j.find("path");
    if (path == j.end()) throw ProtocolError("missing field 'path'");
    if (!path->is_string() || path->get<std::string>().empty())
      throw ProtocolError("field 'path' must be a non-empty string, got " + path->dump());
    event.checkpoint.path = path->get<std::string>();
    if (j.contains("step") && !j.at("step").is_null()) event.checkpoint.step = count(j, "step");
  } else if (name == "result") {
    event.kind = Event::Kind::result;
    event.result = {finite(j, "eval_loss"), count(j, "n_act"), count(j, "n_total"),
                    optional_finite(j, "train_loss")};
    if (event.result.eval_loss < 0)  // a cross-entropy in nats: a negative one is a trainer's bug
      throw ProtocolError("field 'eval_loss' must be a loss in nats (>= 0), got " + j.at("eval_loss").dump());
  } else {
    throw ProtocolError("unknown event '" + name + "' (known: progress, checkpoint, result)");
  }
  return event;
}

std::string announcements_to_json(const std::vector<Announcement>& list) {
  json out = json::array();
  for (const Announcement& a : list)
    out.push_back({{"tokens", a.tokens}, {"step", a.step}, {"path", a.path}, {"attempt", a.attempt}});
  return json{{"checkpoints", out}}.dump(1) + "\n";
}

std::vector<Announcement> announcements_from_json(const std::string& text) {
  std::vector<Announcement> list;
  try {
    const json file = json::parse(text);
    for (const json& a : file.at("checkpoints"))
      list.push_back({a.at("tokens").get<std::int64_t>(), a.value("step", std::int64_t{0}),
                      a.at("path").get<std::string>(), a.value("attempt", std::int64_t{0})});
  } catch (const json::exception& e) {
    throw std::runtime_error(std::string("not a list of announced checkpoints: ") + e.what());
  }
  return list;
}

}  // namespace moesweep::orchestrator::command
