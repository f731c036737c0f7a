#include "moesweep/orchestrator/sweep_spec.h"

#include <openssl/evp.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>

#include "command_backend_protocol.h"
#include "moesweep/input_error.h"
#include "moesweep/orchestrator/slurm_submit.h"
#include "spelling.h"

namespace moesweep::orchestrator {
namespace {

using trainer::RunConfig;

long line_of(const toml::node& n) { return static_cast<long>(n.source().begin.line); }

std::string type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a number";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::array:
      return "a list";
    case toml::node_type::table:
      return "a table";
    default:
      return "a date/time";
  }
}

// One value being read: where it is, so every complaint names the file, the line and the key.
struct Value {
  const std::string& file;
  const toml::node& node;
  std::string key;

  [[noreturn]] void fail(const std::string& what) const {
    throw InputError::at(file, line_of(node), key, what);
  }

  std::int64_t integer() const {
    if (auto i = node.as_integer()) return i->get();
    if (auto f = node.as_floating_point()) {  // allow 2e9 for a token count, but only whole numbers
      double v = f->get();
      if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9.0e18)
        return static_cast<std::int64_t>(v);
      if (std::isfinite(v) && v == std::floor(v))  // a 64-bit count ends at 9.22e18
        fail("too large: must lie below 9e18, got " + format(v));
      fail("expected a whole number, got " + std::to_string(v));
    }
    fail("expected an integer, got " + type_name(node));
  }
  std::int64_t integer_at_least(std::int64_t min) const {
    std::int64_t v = integer();
    if (v < min) fail("must be at least " + std::to_string(min) + ", got " + std::to_string(v));
    return v;
  }
  double number() const {
    if (auto i = node.as_integer()) return static_cast<double>(i->get());
    if (auto f = node.as_floating_point()) {
      if (!std::isfinite(f->get())) fail("must be a finite number");
      return f->get();
    }
    fail("expected a number, got " + type_name(node));
  }
  double positive() const {
    double v = number();
    if (!(v > 0)) fail("must be greater than 0, got " + format(v));
    return v;
  }
  double non_negative() const {
    double v = number();
    if (v < 0) fail("must not be negative, got " + format(v));
    return v;
  }
  double in_unit_interval() const {
    double v = number();
    if (v < 0 || v > 1) fail("must lie in [0, 1], got " + format(v));
    return v;
  }
  std::string string() const {
    if (auto s = node.as_string()) {
      if (s->get().empty()) fail("must not be empty");
      return s->get();
    }
    fail("expected a string, got " + type_name(node));
  }
  std::string one_of(std::initializer_list<const char*> choices) const {
    const std::string v = string();
    std::string listed;
    for (const char* choice : choices) {
      if (v == choice) return v;
      listed += std::string(listed.empty() ? "" : ", ") + "\"" + choice + "\"";
    }
    fail("must be one of " + listed + ", got \"" + v + "\"");
  }
  double below_one() const {
    double v = non_negative();
    if (!(v < 1)) fail("must lie in [0, 1), got " + format(v));
    return v;
  }
  bool boolean() const {
    if (auto b = node.as_boolean()) return b->get();
    fail("expected true or false, got " + type_name(node));
  }
  static std::string format(double v) {
    std::ostringstream o;
    o << v;
    return o.str();
  }
};

// A grid point being resolved, with the line each key came from (for cross-key complaints).
struct Point {
  RunConfig config;
  std::map<std::string, long> lines;
  std::optional<double> max_tokens_per_param;
  std::optional<double> min_non_embedding_params;
  long line(const std::string& key) const {
    auto it = lines.find(key);
    return it == lines.end() ? 0 : it->second;
  }
};

struct Field {
  const char* section;
  const char* key;
  std::function<void(Point&, const Value&)> apply;
};

const std::vector<Field>& run_fields() {
  static const std::vector<Field> fields = {
      {"data", "train", [](Point& p, const Value& v) { p.config.data.train = v.string(); }},
      {"data", "val", [](Point& p, const Value& v) { p.config.data.val = v.string(); }},
      {"data", "tokenizer",
       [](Point& p, const Value& v) {
         std::string name = v.string();
         if (trainer::vocab_size_of(name) == 0)
           v.fail("unknown tokenizer '" + name + "' (known: byte, gpt2, sentencepiece:VOCAB)");
         p.config.data.tokenizer = name;
         p.config.model.vocab_size = trainer::vocab_size_of(name);
       }},
      {"model", "d_model", [](Point& p, const Value& v) { p.config.model.d_model = v.integer_at_least(1); }},
      {"model", "n_layers",
       [](Point& p, const Value& v) { p.config.model.n_layers = v.integer_at_least(1); }},
      {"model", "n_heads", [](Point& p, const Value& v) { p.config.model.n_heads = v.integer_at_least(1); }},
      {"model", "experts", [](Point& p, const Value& v) { p.config.model.experts = v.integer_at_least(1); }},
      {"model", "seq_len", [](Point& p, const Value& v) { p.config.model.seq_len = v.integer_at_least(2); }},
      {"model", "capacity_factor",
       [](Point& p, const Value& v) { p.config.model.capacity_factor = v.positive(); }},
      {"model", "eval_capacity_factor",
       [](Point& p, const Value& v) { p.config.model.eval_capacity_factor = v.positive(); }},
      {"model", "routing_group",
       [](Point& p, const Value& v) { p.config.model.routing_group = v.integer_at_least(1); }},
      {"model", "capacity_rounding",
       [](Point& p, const Value& v) { p.config.model.capacity_rounding = v.one_of({"floor", "ceil"}); }},
      {"model", "final_norm", [](Point& p, const Value& v) { p.config.model.final_norm = v.boolean(); }},
      {"model", "init_truncation",
       [](Point& p, const Value& v) { p.config.model.init_truncation = v.positive(); }},
      {"model", "embedding_init_fan_in",
       [](Point& p, const Value& v) { p.config.model.embedding_init_fan_in = v.integer_at_least(1); }},
      {"model", "expert_down_fan_in",
       [](Point& p, const Value& v) {
         p.config.model.expert_down_fan_in = v.one_of({"all_experts", "one_expert"});
       }},
      {"train", "tokens", [](Point& p, const Value& v) { p.config.train.tokens = v.integer_at_least(1); }},
      {"train", "batch_tokens",
       [](Point& p, const Value& v) { p.config.train.batch_tokens = v.integer_at_least(1); }},
      {"train", "lr",
       [](Point& p, const Value& v) {
         if (auto s = v.node.as_string()) {
           if (s->get() != "auto") v.fail("expected a number or \"auto\", got \"" + s->get() + "\"");
           p.config.train.lr_auto = true;
         } else {
           p.config.train.lr = v.positive();
           p.config.train.lr_auto = false;
         }
       }},
      {"train", "warmup_tokens",
       [](Point& p, const Value& v) { p.config.train.warmup_tokens = v.integer_at_least(0); }},
      {"train", "decay_fraction",
       [](Point& p, const Value& v) { p.config.train.decay_fraction = v.in_unit_interval(); }},
      {"train", "weight_decay",
       [](Point& p, const Value& v) { p.config.train.weight_decay = v.non_negative(); }},
      {"train", "grad_clip", [](Point& p, const Value& v) { p.config.train.grad_clip = v.positive(); }},
      {"train", "seed",
       [](Point& p, const Value& v) {
         p.config.train.seed = static_cast<std::uint64_t>(v.integer_at_least(0));
       }},
      {"train", "eval_tokens",
       [](Point& p, const Value& v) { p.config.train.eval_tokens = v.integer_at_least(1); }},
      {"train", "checkpoint_every_tokens",
       [](Point& p, const Value& v) { p.config.train.checkpoint_every_tokens = v.integer_at_least(1); }},
      {"train", "batch_ramp", [](Point& p, const Value& v) { p.config.train.batch_ramp = v.boolean(); }},
      {"train", "z_loss_weight",
       [](Point& p, const Value& v) { p.config.train.z_loss_weight = v.non_negative(); }},
      {"train", "balance_loss_weight",
       [](Point& p, const Value& v) { p.config.train.balance_loss_weight = v.non_negative(); }},
      {"train", "adam_beta1", [](Point& p, const Value& v) { p.config.train.adam_beta1 = v.below_one(); }},
      {"train", "adam_beta2", [](Point& p, const Value& v) { p.config.train.adam_beta2 = v.below_one(); }},
      {"train", "adam_eps", [](Point& p, const Value& v) { p.config.train.adam_eps = v.positive(); }},
      {"train", "weight_decay_scope",
       [](Point& p, const Value& v) { p.config.train.weight_decay_scope = v.one_of({"all", "matrices"}); }},
  };
  return fields;
}

const std::vector<Field>& filter_fields() {
  static const std::vector<Field> fields = {
      {"filters", "max_tokens_per_param",
       [](Point& p, const Value& v) { p.max_tokens_per_param = v.positive(); }},
      {"filters", "min_non_embedding_params",
       [](Point& p, const Value& v) { p.min_non_embedding_params = v.non_negative(); }},
  };
  return fields;
}

const Field* find_field(const std::vector<Field>& fields, std::string_view section, std::string_view key) {
  for (const Field& f : fields)
    if (f.key == key && (section.empty() || f.section == section)) return &f;
  return nullptr;
}

// "unknown key 'expert'; did you mean 'experts'?" — the closest known key, if any is close.
std::string unknown_key_message(std::string_view key, const std::vector<std::string>& known,
                                const std::string& elsewhere = "") {
  std::string message = "unknown key '" + std::string(key) + "'";
  if (!elsewhere.empty()) return message + "; it belongs in " + elsewhere;
  const std::string best = closest_name(key, known);
  if (!best.empty()) return message + "; did you mean '" + best + "'?";
  std::string list;
  for (const std::string& k : known) list += (list.empty() ? "" : ", ") + k;
  return message + " (known: " + list + ")";
}

std::vector<std::string> keys_of(const std::vector<Field>& fields, std::string_view section) {
  std::vector<std::string> keys;
  for (const Field& f : fields)
    if (section.empty() || f.section == section) keys.emplace_back(f.key);
  return keys;
}

const toml::table& as_table(const std::string& file, const toml::node& node, const std::string& key) {
  if (auto t = node.as_table()) return *t;
  throw InputError::at(file, line_of(node), key, "expected a table [" + key + "], got " + type_name(node));
}

void apply_section(const std::string& file, const toml::table& table, const std::string& section,
                   const std::vector<Field>& fields, Point& point) {
  for (auto&& [k, node] : table) {
    std::string key(k.str());
    if (const Field* f = find_field(fields, section, key)) {
      f->apply(point, Value{file, node, section + "." + key});
      point.lines[key] = line_of(node);
      continue;
    }
    std::string elsewhere;
    if (const Field* other = find_field(run_fields(), "", key))
      elsewhere = "[" + std::string(other->section) + "]";
    throw InputError::at(file, line_of(node), section + "." + key,
                         unknown_key_message(key, keys_of(fields, section), elsewhere));
  }
}

toml::table parse(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw InputError(path + ": no such file");
  try {
    return toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    throw InputError::at(path, static_cast<long>(e.source().begin.line), "",
                         "malformed TOML: " + std::string(e.description()));
  }
}

// Counts a sweep derives (parameters, its total tokens) are int64, like the values they come from:
// computed here with overflow checks, so a file whose counts do not fit is refused with its key and
// line instead of wrapping to a negative number.
constexpr const char* kInt64Max = "9223372036854775807";

std::optional<std::int64_t> checked_sum(std::optional<std::int64_t> a, std::optional<std::int64_t> b) {
  std::int64_t sum = 0;
  if (!a || !b || __builtin_add_overflow(*a, *b, &sum)) return std::nullopt;
  return sum;
}

std::optional<std::int64_t> checked_product(std::initializer_list<std::int64_t> factors) {
  std::int64_t product = 1;
  for (const std::int64_t f : factors)
    if (__builtin_mul_overflow(product, f, &product)) return std::nullopt;
  return product;
}

// Refuses a shape whose parameter counts (trainer::active_params, trainer::total_params, and the router's
// d·E·L that the memory estimate adds) leave int64.
void check_parameter_counts(const std::string& file, const Point& p) {
  const auto& m = p.config.model;
  const auto embedding = checked_product({2, m.d_model, m.vocab_size});
  if (!checked_sum(checked_product({13, m.d_model, m.d_model, m.n_layers}), embedding)) {
    const std::string key = p.line("d_model") > 0 ? "d_model" : "n_layers";
    throw InputError::at(file, p.line(key), key,
                         "d_model " + std::to_string(m.d_model) + " with n_layers " +
                             std::to_string(m.n_layers) +
                             ": the active parameter count 13·d²·L + 2·d·V exceeds " + kInt64Max);
  }
  std::optional<std::int64_t> total;
  if (const auto ffn = checked_sum(checked_product({9, m.experts}), 4))
    total = checked_sum(checked_sum(checked_product({*ffn, m.d_model, m.d_model, m.n_layers}), embedding),
                        checked_product({m.d_model, m.experts, m.n_layers}));
  if (!total)
    throw InputError::at(file, p.line("experts"), "experts",
                         std::to_string(m.experts) + " experts at d_model " + std::to_string(m.d_model) +
                             ": the total parameter count (4 + 9E)·d²·L + 2·d·V exceeds " + kInt64Max);
}

// Σ D over a sweep's grid points as they are read, refused past int64 with the line of the value that
// overflowed it. Sweep::total_tokens is no more (a point listed twice is one run), nor is
// Sweep::total_trained_tokens (a trunk and its branches train Σ D less the shorter branch points).
class TokenTotal {
 public:
  void add(const std::string& file, const Point& point, const Point& base) {
    if (!__builtin_add_overflow(total_, point.config.train.tokens, &total_)) return;
    const long line = point.line("tokens");
    throw InputError::at(file, line, line == base.line("tokens") ? "train.tokens" : "grid.tokens",
                         "with " + std::to_string(point.config.train.tokens) +
                             " the sweep's runs add up to more than " + kInt64Max +
                             " tokens, the most a 64-bit count holds");
  }

 private:
  std::int64_t total_ = 0;
};

// Cross-key checks and derived values, once a point is fully assembled. `data_required`: false for the
// command backend, whose trainer reads its own data.
void finish_point(const std::string& file, Point& p, bool data_required = true) {
  RunConfig& c = p.config;
  if (data_required && c.data.train.empty())
    throw InputError::at(file, 0, "data.train",
                         "missing: the token shard to train on (moesweep prepare-data writes it)");
  if (data_required && c.data.val.empty())
    throw InputError::at(file, 0, "data.val", "missing: the held-out token shard for eval");
  if (p.lines.count("tokens") == 0)
    throw InputError::at(file, 0, "train.tokens", "missing: the number of training tokens D");
  const auto& m = c.model;
  if (m.d_model % m.n_heads != 0)
    throw InputError::at(
        file, p.line("n_heads"), "n_heads",
        "d_model " + std::to_string(m.d_model) + " is not divisible by n_heads " + std::to_string(m.n_heads));
  if ((m.d_model / m.n_heads) % 2 != 0)
    throw InputError::at(file, p.line("n_heads"), "n_heads",
                         "the head dimension d_model/n_heads = " + std::to_string(m.d_model / m.n_heads) +
                             " must be even (RoPE rotates pairs)");
  auto& t = c.train;
  if (t.batch_tokens % m.seq_len != 0)
    throw InputError::at(
        file, p.line("batch_tokens"), "batch_tokens",
        std::to_string(t.batch_tokens) + " is not a multiple of seq_len " + std::to_string(m.seq_len));
  if (const auto problem = trainer::routing_group_problem(c); !problem.empty())
    throw InputError::at(file, p.line("routing_group") ? p.line("routing_group") : p.line("batch_tokens"),
                         "routing_group", problem);
  if (t.tokens < t.batch_tokens)
    throw InputError::at(file, p.line("tokens"), "tokens",
                         std::to_string(t.tokens) + " is less than one batch (batch_tokens " +
                             std::to_string(t.batch_tokens) + ")");
  const double constant_phase = (1.0 - t.decay_fraction) * static_cast<double>(t.tokens);
  if (static_cast<double>(t.warmup_tokens) > constant_phase)
    throw InputError::at(file, p.line("warmup_tokens"), "warmup_tokens",
                         std::to_string(t.warmup_tokens) + " runs past the start of the decay at " +
                             std::to_string(static_cast<std::int64_t>(constant_phase)) + " tokens");
  check_parameter_counts(file, p);
  if (t.lr_auto) t.lr = trainer::auto_learning_rate(trainer::active_params(m), m.experts);
  if (!(t.lr > 0)) throw InputError::at(file, 0, "train.lr", "missing: a learning rate or \"auto\"");
}

bool passes_filters(const Point& p) {
  const auto n_act = static_cast<double>(trainer::active_params(p.config.model));
  if (p.max_tokens_per_param && static_cast<double>(p.config.train.tokens) / n_act > *p.max_tokens_per_param)
    return false;
  if (p.min_non_embedding_params &&
      static_cast<double>(trainer::non_embedding_active_params(p.config.model)) < *p.min_non_embedding_params)
    return false;
  return true;
}

ExpandedRun expanded(const RunConfig& config, RunKind kind = RunKind::independent) {
  const std::string branching = kind == RunKind::branch  ? "cooldown"
                                : kind == RunKind::trunk ? "cooldown-trunk"
                                                         : "";
  ExpandedRun run;
  run.config = config;
  run.canonical_json = canonical_json(config, branching);
  run.run_key = run_key_of(config, branching);
  run.n_act = trainer::active_params(config.model);
  run.n_total = trainer::total_params(config.model);
  run.flops = trainer::training_flops(config);
  run.kind = kind;
  run.trained_tokens = config.train.tokens;
  run.trained_flops = run.flops;
  return run;
}

// A grid point of a block with branching = "cooldown", kept until every block is read: the budgets of
// one model may come from several blocks and still share one trunk.
struct BranchedPoint {
  RunConfig config;
  std::string file;
  long line;  // of the block's branching key
};

// The branch point of a cooldown branch, or an InputError when the run has nothing to share.
trainer::StepBoundary checked_branch_point(const BranchedPoint& p) {
  const auto& t = p.config.train;
  if (!(t.decay_fraction > 0))
    throw InputError::at(p.file, p.line, "grid.branching",
                         "cooldown branches need a decay: train.decay_fraction is 0");
  const trainer::StepBoundary point = trainer::cooldown_branch_point(p.config);
  if (point.step == 0)
    throw InputError::at(p.file, p.line, "grid.branching",
                         "tokens = " + std::to_string(t.tokens) +
                             ": the branch point (1 − decay_fraction)·D is less than one batch of " +
                             std::to_string(t.batch_tokens) + " tokens, so there is no trunk to share");
  return point;
}

// Per model (every resolved key but train.tokens), one trunk to the largest branch point and one branch
// per budget.
void expand_branches(const std::vector<BranchedPoint>& points, std::vector<ExpandedRun>& runs) {
  std::map<std::string, std::map<std::int64_t, const BranchedPoint*>> models;
  for (const BranchedPoint& p : points) {
    RunConfig model = p.config;
    model.train.tokens = 0;
    models[canonical_json(model)].emplace(p.config.train.tokens, &p);
  }
  for (const auto& [model, budgets] : models) {
    std::vector<std::pair<const BranchedPoint*, trainer::StepBoundary>> branches;
    std::vector<trainer::StepBoundary> points_of_trunk;
    for (const auto& [tokens, point] : budgets) {
      branches.emplace_back(point, checked_branch_point(*point));
      points_of_trunk.push_back(branches.back().second);
    }
    std::sort(points_of_trunk.begin(), points_of_trunk.end(),
              [](const auto& a, const auto& b) { return a.tokens < b.tokens; });
    points_of_trunk.erase(std::unique(points_of_trunk.begin(), points_of_trunk.end()), points_of_trunk.end());

    ExpandedRun trunk = expanded(
        trainer::cooldown_trunk_config(budgets.begin()->second->config, points_of_trunk.back().tokens),
        RunKind::trunk);
    trunk.branch_points = points_of_trunk;
    for (const auto& [point, at] : branches) {
      ExpandedRun branch = expanded(point->config, RunKind::branch);
      branch.trunk_key = trunk.run_key;
      branch.trunk_config = trunk.config;
      branch.branch_point = at;
      branch.trained_tokens = point->config.train.tokens - at.tokens;
      branch.trained_flops =
          6.0 * static_cast<double>(branch.n_act) * static_cast<double>(branch.trained_tokens);
      runs.push_back(std::move(branch));
    }
    runs.push_back(std::move(trunk));
  }
}

// Reads [data], [model], [train] (and, for a sweep, [filters]) into the base point; rejects other keys.
Point base_point(const std::string& file, const toml::table& root, const std::set<std::string>& allowed) {
  if (root.empty()) throw InputError(file + ": empty file (expected [data], [model] and [train])");
  Point base;
  base.config.train.lr_auto = true;  // the paper's rule unless the file gives a learning rate
  for (auto&& [k, node] : root) {
    std::string key(k.str());
    if (!allowed.count(key)) {
      std::vector<std::string> known(allowed.begin(), allowed.end());
      std::string hint = (key == "grid" || key == "sweep" || key == "filters" || key == "resources" ||
                          key == "store" || key == "backend")
                             ? "only sweep files have [" + key + "]; use moesweep expand/run for a sweep"
                             : unknown_key_message(key, known);
      throw InputError::at(file, line_of(node), key, hint);
    }
    if (key == "data" || key == "model" || key == "train")
      apply_section(file, as_table(file, node, key), key, run_fields(), base);
    else if (key == "filters")
      apply_section(file, as_table(file, node, key), key, filter_fields(), base);
  }
  return base;
}

// One grid axis: a key and the values it takes (a scalar is a one-value list).
struct Axis {
  std::string key;
  std::vector<const toml::node*> values;
};

std::vector<Axis> grid_axes(const std::string& file, const toml::table& block) {
  std::vector<Axis> axes;
  bool has_shape = false, has_shape_key = false;
  for (auto&& [k, node] : block) {
    std::string key(k.str());
    if (key == "branching") continue;  // a property of the block, not an axis (see load_sweep_file)
    Axis axis{key, {}};
    if (auto list = node.as_array()) {
      if (list->empty())
        throw InputError::at(file, line_of(node), "grid." + key, "empty list: the grid has no points");
      for (const toml::node& v : *list) axis.values.push_back(&v);
    } else {
      axis.values.push_back(&node);
    }
    if (key == "shape") {
      has_shape = true;
      for (const toml::node* v : axis.values) {
        const toml::table& shape = as_table(file, *v, "grid.shape");
        for (const char* needed : {"d_model", "n_layers", "n_heads"})
          if (!shape.contains(needed))
            throw InputError::at(file, line_of(*v), std::string("grid.shape.") + needed,
                                 "missing from a shape (a shape is {d_model, n_layers, n_heads})");
        for (auto&& [sk, sv] : shape)
          if (sk != "d_model" && sk != "n_layers" && sk != "n_heads")
            throw InputError::at(file, line_of(sv), "grid.shape." + std::string(sk.str()),
                                 unknown_key_message(sk.str(), {"d_model", "n_layers", "n_heads"}));
      }
    } else if (const Field* f = find_field(run_fields(), "", key); f && std::string(f->section) != "data") {
      has_shape_key = has_shape_key || key == "d_model" || key == "n_layers" || key == "n_heads";
    } else if (!find_field(filter_fields(), "", key)) {
      std::vector<std::string> known = keys_of(filter_fields(), "");
      known.push_back("shape");
      known.push_back("branching");
      for (const std::string& m : keys_of(run_fields(), "model")) known.push_back(m);
      for (const std::string& t : keys_of(run_fields(), "train")) known.push_back(t);
      throw InputError::at(file, line_of(node), "grid." + key, unknown_key_message(key, known));
    }
    if (find_field(filter_fields(), "", key) && axis.values.size() != 1)
      throw InputError::at(file, line_of(node), "grid." + key, "a filter takes one value, not a list");
    axes.push_back(std::move(axis));
  }
  if (has_shape && has_shape_key)
    throw InputError::at(file, line_of(block), "grid",
                         "give either shape or d_model/n_layers/n_heads in one block, not both");
  return axes;
}

void apply_grid_value(const std::string& file, Point& p, const std::string& key, const toml::node& node) {
  if (key == "shape") {
    const toml::table& shape = *node.as_table();
    for (auto&& [sk, sv] : shape) {
      std::string k(sk.str());
      find_field(run_fields(), "model", k)->apply(p, Value{file, sv, "grid.shape." + k});
      p.lines[k] = line_of(sv);
    }
    return;
  }
  const Field* f = find_field(run_fields(), "", key);
  if (!f) f = find_field(filter_fields(), "", key);
  f->apply(p, Value{file, node, "grid." + key});
  p.lines[key] = line_of(node);
}

// [backend]: command = ["program", "arg", ...] and env = { NAME = "value" }, each string a template whose
// placeholders must all be known (command_backend_protocol.h).
CommandTemplate command_template(const std::string& file, const toml::node& node) {
  CommandTemplate t;
  auto checked = [&](const toml::node& n, const std::string& key) {
    const std::string text = Value{file, n, key}.string();
    if (const auto problem = command::check_template(text)) Value{file, n, key}.fail(*problem);
    return text;
  };
  for (auto&& [k, v] : as_table(file, node, "backend")) {
    const std::string key = "backend." + std::string(k.str());
    if (k == "command") {
      const toml::array* argv = v.as_array();
      if (!argv) Value{file, v, key}.fail("expected a list of strings [\"program\", \"arg\", ...], got " + type_name(v));
      if (argv->empty()) Value{file, v, key}.fail("empty list: name the program to run");
      for (const toml::node& arg : *argv) t.argv.push_back(checked(arg, key));
    } else if (k == "env") {
      for (auto&& [name, value] : as_table(file, v, key))
        t.env.emplace_back(std::string(name.str()), checked(value, key + "." + std::string(name.str())));
    } else if (k == "stop_timeout_s") {
      t.stop_timeout_s = Value{file, v, key}.positive();
    } else {
      Value{file, v, key}.fail(unknown_key_message(k.str(), {"command", "env", "stop_timeout_s"}));
    }
  }
  if (t.argv.empty()) throw InputError::at(file, line_of(node), "backend.command", "missing: the command to run");
  return t;
}

}  // namespace

std::string canonical_json(const RunConfig& c, const std::string& branching) {
  // nlohmann::json objects keep keys sorted, and numbers print in their shortest round-trip form: the
  // same text on every machine. Every value is one the user wrote (or its default), never one a rule
  // derives by floating-point arithmetic: lr = "auto" is hashed as the rule's name and version, and
  // c.train.lr, the rate the rule computed, is not read (its last bit differs between builds). A run
  // with an explicit lr hashes the number exactly as before the rule got a version, so explicitly
  // written runs kept their keys. Two integers here are derived, both exactly: model.vocab_size (a
  // table lookup on the tokenizer) and, for a trunk, train.tokens (its largest branch point:
  // trainer::cooldown_branch_point's floor((1 − f)·D) and comparisons, correctly rounded IEEE
  // operations with no libm call and no a·b + c a compiler could fuse, so the same on every build).
  const nlohmann::json lr =
      c.train.lr_auto ? nlohmann::json(trainer::kAutoLearningRateRule) : nlohmann::json(c.train.lr);
  nlohmann::json j;
  j["data"] = {{"train", c.data.train}, {"val", c.data.val}, {"tokenizer", c.data.tokenizer}};
  j["model"] = {{"d_model", c.model.d_model},
                {"n_layers", c.model.n_layers},
                {"n_heads", c.model.n_heads},
                {"experts", c.model.experts},
                {"seq_len", c.model.seq_len},
                {"vocab_size", c.model.vocab_size},
                {"capacity_factor", c.model.capacity_factor},
                {"eval_capacity_factor", c.model.eval_capacity_factor},
                {"routing_group", c.model.routing_group},
                {"capacity_rounding", c.model.capacity_rounding},
                {"final_norm", c.model.final_norm},
                {"init_truncation", c.model.init_truncation},
                {"embedding_init_fan_in", c.model.embedding_init_fan_in},
                {"expert_down_fan_in", c.model.expert_down_fan_in}};
  j["train"] = {{"tokens", c.train.tokens},
                {"batch_tokens", c.train.batch_tokens},
                {"lr", lr},
                {"warmup_tokens", c.train.warmup_tokens},
                {"decay_fraction", c.train.decay_fraction},
                {"weight_decay", c.train.weight_decay},
                {"grad_clip", c.train.grad_clip},
                {"seed", c.train.seed},
                {"eval_tokens", c.train.eval_tokens},
                {"checkpoint_every_tokens", c.train.checkpoint_every_tokens},
                {"batch_ramp", c.train.batch_ramp},
                {"z_loss_weight", c.train.z_loss_weight},
                {"balance_loss_weight", c.train.balance_loss_weight},
                {"adam_beta1", c.train.adam_beta1},
                {"adam_beta2", c.train.adam_beta2},
                {"adam_eps", c.train.adam_eps},
                {"weight_decay_scope", c.train.weight_decay_scope}};
  if (!branching.empty()) j["branching"] = branching;
  return j.dump();
}

const char* to_string(RunKind kind) {
  switch (kind) {
    case RunKind::trunk:
      return "trunk";
    case RunKind::branch:
      return "branch";
    case RunKind::independent:
      break;
  }
  return "run";
}

// load_sweep_file refuses a sweep whose totals leave int64 (TokenTotal), so these overflow only for a
// Sweep built by hand; they throw then rather than wrap.
std::int64_t Sweep::total_tokens() const {
  std::optional<std::int64_t> total = 0;
  for (const ExpandedRun& r : runs)
    if (r.kind != RunKind::trunk) total = checked_sum(total, r.config.train.tokens);
  if (!total)
    throw std::overflow_error(path + ": the sweep's runs add up to more than " + kInt64Max + " tokens");
  return *total;
}

std::int64_t Sweep::total_trained_tokens() const {
  std::optional<std::int64_t> total = 0;
  for (const ExpandedRun& r : runs) total = checked_sum(total, r.trained_tokens);
  if (!total) throw std::overflow_error(path + ": the sweep's runs train more than " + kInt64Max + " tokens");
  return *total;
}

std::string run_key_of(const RunConfig& config, const std::string& branching) {
  const std::string text = canonical_json(config, branching);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(text.data(), text.size(), digest, &length, EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("SHA-256 failed");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 15];
  }
  return hex;
}

RunConfig load_run_file(const std::string& path) {
  toml::table root = parse(path);
  Point point = base_point(path, root, {"data", "model", "train"});
  finish_point(path, point);
  return point.config;
}

Sweep load_sweep_file(const std::string& path) {
  toml::table root = parse(path);
  Point base = base_point(path, root,
                          {"data", "model", "train", "sweep", "backend", "resources", "store", "filters", "grid"});

  Sweep sweep;
  sweep.path = path;
  sweep.name = std::filesystem::path(path).stem().string();
  long backend_line = 0;
  if (const toml::node* node = root.get("sweep")) {
    for (auto&& [k, v] : as_table(path, *node, "sweep")) {
      Value value{path, v, "sweep." + std::string(k.str())};
      if (k == "name")
        sweep.name = value.string();
      else if (k == "backend")
        sweep.backend = value.one_of({"torch", "simulate", "command"}), backend_line = line_of(v);
      else if (k != "description")
        value.fail(unknown_key_message(k.str(), {"name", "description", "backend"}));
    }
  }
  if (const toml::node* node = root.get("backend")) sweep.command = command_template(path, *node);
  if (sweep.backend == "command" && sweep.command.argv.empty())
    throw InputError::at(path, backend_line, "sweep.backend",
                         "\"command\" needs a [backend] table with command = [\"program\", \"arg\", ...]");
  const bool data_required = sweep.backend != "command";
  if (const toml::node* node = root.get("resources")) {
    for (auto&& [k, v] : as_table(path, *node, "resources")) {
      Value value{path, v, "resources." + std::string(k.str())};
      if (k == "rank_memory") {
        if (v.is_string()) {
          try {
            sweep.resources.rank_memory_bytes = parse_bytes(value.string());
          } catch (const InputError& e) {
            value.fail(e.what());
          }
        } else {
          sweep.resources.rank_memory_bytes = value.integer_at_least(1);
        }
      } else if (k == "max_attempts") {
        sweep.resources.max_attempts = static_cast<int>(value.integer_at_least(1));
      } else if (k == "heartbeat_timeout_s") {
        sweep.resources.heartbeat_timeout_s = value.positive();
      } else if (k == "wall_clock") {  // Slurm's time formats, as `sbatch --time` takes them
        const std::string text = value.string();
        try {
          sweep.resources.wall_clock_s = static_cast<double>(slurm::parse_slurm_time(text));
        } catch (const InputError&) {
          value.fail("'" + text +
                     "' is not a Slurm time limit (M, M:S, H:M:S, D-H, D-H:M or D-H:M:S; e.g. \"48:00:00\")");
        }
      } else if (k == "rank_flops") {
        sweep.resources.rank_flops = value.positive();
      } else {
        value.fail(unknown_key_message(
            k.str(), {"rank_memory", "max_attempts", "heartbeat_timeout_s", "wall_clock", "rank_flops"}));
      }
    }
  }

  if (const toml::node* node = root.get("store")) {
    for (auto&& [k, v] : as_table(path, *node, "store")) {
      Value value{path, v, "store." + std::string(k.str())};
      if (k == "journal") {
        const std::string text = value.string();
        if (text != "auto" && text != "wal" && text != "rollback")
          value.fail("expected \"auto\", \"wal\" or \"rollback\", got \"" + text + "\"");
        sweep.journal = db::parse_journal(text, "store.journal");
      } else {
        value.fail(unknown_key_message(k.str(), {"journal"}));
      }
    }
  }

  std::vector<ExpandedRun> runs;
  std::vector<BranchedPoint> branched;
  TokenTotal tokens;
  const toml::node* grid = root.get("grid");
  if (!grid) {
    finish_point(path, base, data_required);
    if (passes_filters(base)) runs.push_back(expanded(base.config));
  } else {
    const toml::array* blocks = grid->as_array();
    if (!blocks || !blocks->is_array_of_tables())
      throw InputError::at(path, line_of(*grid), "grid", "expected [[grid]] blocks (an array of tables)");
    if (blocks->empty())
      throw InputError::at(path, line_of(*grid), "grid", "empty list: the sweep has no grid blocks");
    for (const toml::node& block_node : *blocks) {
      const toml::table& block = *block_node.as_table();
      std::vector<Axis> axes = grid_axes(path, block);
      std::optional<long> branching_line;  // set when the block branches
      if (const toml::node* b = block.get("branching")) {
        const std::string mode = Value{path, *b, "grid.branching"}.string();
        if (mode == "cooldown")
          branching_line = line_of(*b);
        else if (mode != "none")
          Value{path, *b, "grid.branching"}.fail("expected \"cooldown\" or \"none\", got \"" + mode + "\"");
      }
      // Odometer over the product of the axes.
      std::vector<std::size_t> index(axes.size(), 0);
      while (true) {
        Point point = base;
        for (std::size_t a = 0; a < axes.size(); ++a)
          apply_grid_value(path, point, axes[a].key, *axes[a].values[index[a]]);
        finish_point(path, point, data_required);
        if (passes_filters(point)) {
          tokens.add(path, point, base);
          if (branching_line)
            branched.push_back({point.config, path, *branching_line});
          else
            runs.push_back(expanded(point.config));
        }
        std::size_t a = 0;
        while (a < axes.size() && ++index[a] == axes[a].values.size()) index[a++] = 0;
        if (a == axes.size()) break;
      }
    }
  }

  expand_branches(branched, runs);

  std::sort(runs.begin(), runs.end(), [](const ExpandedRun& x, const ExpandedRun& y) {
    return std::tie(x.flops, x.n_act, x.config.model.experts, x.config.train.tokens, x.kind, x.run_key) <
           std::tie(y.flops, y.n_act, y.config.model.experts, y.config.train.tokens, y.kind, y.run_key);
  });
  runs.erase(std::unique(runs.begin(), runs.end(),
                         [](const ExpandedRun& x, const ExpandedRun& y) { return x.run_key == y.run_key; }),
             runs.end());
  if (runs.empty())
    throw InputError(path + ": the sweep expands to no runs (every grid point was filtered out)");
  sweep.runs = std::move(runs);
  return sweep;
}

db::RunSpec to_run_spec(const ExpandedRun& run) {
  const auto& m = run.config.model;
  db::RunSpec spec;
  spec.run_key = run.run_key;
  spec.config_json = run.canonical_json;
  spec.n_act = run.n_act;
  spec.n_total = run.n_total;
  spec.tokens = run.config.train.tokens;
  spec.experts = m.experts;
  spec.d_model = m.d_model;
  spec.n_layers = m.n_layers;
  spec.n_heads = m.n_heads;
  spec.lr = run.config.train.lr;
  spec.flops = run.flops;
  spec.kind = to_string(run.kind);
  spec.trained_tokens = run.trained_tokens;
  if (run.kind == RunKind::branch) {
    spec.trunk_key = run.trunk_key;
    spec.branch_step = run.branch_point.step;
    spec.branch_tokens = run.branch_point.tokens;
  }
  return spec;
}

std::int64_t parse_bytes(const std::string& text) {
  std::size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    throw InputError("'" + text + "' is not a size (expected e.g. 80GB, 24GiB or a byte count)");
  }
  std::string unit = text.substr(used);
  unit.erase(0, unit.find_first_not_of(' '));
  static const std::map<std::string, double> kUnits = {
      {"", 1},      {"B", 1},        {"KB", 1e3},        {"MB", 1e6},           {"GB", 1e9},
      {"TB", 1e12}, {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0}, {"TiB", 1099511627776.0},
  };
  auto it = kUnits.find(unit);
  if (it == kUnits.end() || !(value > 0))
    throw InputError("'" + text + "' is not a size (expected e.g. 80GB, 24GiB or a byte count)");
  return static_cast<std::int64_t>(value * it->second);
}

}  // namespace moesweep::orchestrator
