#include "moesweep/analysis/fit.h"

#include <ceres/ceres.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <mutex>
#include <numeric>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "law_terms.h"
#include "moesweep/input_error.h"

namespace moesweep::analysis {
namespace {

// The solver's parameter vector: scales and E_start as logarithms, so they stay positive; E_max as its
// inverse 1/E_max. In ln E_max the no-saturation limit E_max → ∞ is flat (every derivative vanishes), so
// a fit that drifted there would stay put in every bootstrap refit and report a zero-width interval at
// some astronomical E_max; in 1/E_max that limit is the point 0, where the derivative is −Ê, so the
// bootstrap refits move freely between "no saturation" and a finite E_max.
enum Param : int {
  kLogA,
  kAlpha,
  kGamma,
  kDelta,
  kLogB,
  kBeta,
  kZeta,
  kOmega,
  kLogC,
  kLogEStart,
  kInverseEMax
};
constexpr int kParams = 11;
using ParamVector = std::array<double, kParams>;

// Which coefficients a fit holds fixed: a dense-only fit has no expert terms (γ = δ = ζ = ω = 0, and
// E_start, E_max then have no effect); with fewer than three expert counts Clark's transform is held
// at the published E_start and E_max.
enum class FitShape { joint, fixed_transform, dense };

std::vector<int> fixed_params(FitShape shape) {
  switch (shape) {
    case FitShape::dense:
      return {kGamma, kDelta, kZeta, kOmega, kLogEStart, kInverseEMax};
    case FitShape::fixed_transform:
      return {kLogEStart, kInverseEMax};
    case FitShape::joint:
      return {};
  }
  return {};
}

// The coefficients the start grid spans: the nine exponents and scales, or the five of a dense law.
std::vector<int> grid_params(FitShape shape) {
  if (shape == FitShape::dense) return {kLogA, kAlpha, kLogB, kBeta, kLogC};
  return {kLogA, kAlpha, kGamma, kDelta, kLogB, kBeta, kZeta, kOmega, kLogC};
}

std::size_t fitted_count(FitShape shape) {
  return static_cast<std::size_t>(kParams) - fixed_params(shape).size();
}

LawForm form_of(FitShape shape) { return shape == FitShape::dense ? LawForm::dense : LawForm::joint; }

// Three levels per coefficient, wide enough to cover published LLM fits (Chinchilla, the paper) and
// small CPU sweeps. c's levels are fractions of the lowest fitted loss, since c must lie below it.
std::array<double, 3> grid_levels(int param, double min_log_loss) {
  switch (param) {
    case kLogA:
    case kLogB:
      return {1.0, 4.0, 7.0};
    case kAlpha:
    case kBeta:
      return {-0.1, -0.3, -0.5};
    case kGamma:
    case kZeta:
      return {-0.02, 0.0, 0.02};
    case kDelta:
    case kOmega:
      return {-0.5, 0.0, 0.5};
    case kLogC:
      return {min_log_loss + std::log(0.25), min_log_loss + std::log(0.5), min_log_loss + std::log(0.8)};
    default:
      throw std::logic_error("no grid for this parameter");
  }
}

constexpr std::size_t kShortlisted = 1024;
constexpr int kShortIterations = 20;
constexpr std::size_t kPolished = 32;

struct Sample {
  double log_n, log_d, log_loss;
  double sqrt_weight;        // √wᵢ: 1, or the paper objective's (ln Lᵢ)^−30 rescaled to mean 1
  std::size_t expert_index;  // into the distinct expert counts
};

struct TrainingSet {
  std::vector<Sample> samples;
  std::vector<double> distinct_experts;
  std::vector<int> regularised;  // parameters the paper objective's 1e-5·Σp² covers; empty for huber
};

TrainingSet make_training_set(const std::vector<Run>& runs, const std::vector<std::size_t>& which,
                              Objective objective, FitShape shape) {
  TrainingSet set;
  double weight_sum = 0;
  for (const std::size_t i : which) {
    const Run& run = runs[i];
    auto it = std::find(set.distinct_experts.begin(), set.distinct_experts.end(), run.experts);
    if (it == set.distinct_experts.end())
      it = set.distinct_experts.insert(set.distinct_experts.end(), run.experts);
    const double log_loss = std::log(run.loss);
    const double weight = objective == Objective::paper ? std::pow(log_loss, kPaperWeightExponent) : 1.0;
    weight_sum += weight;
    set.samples.push_back(Sample{std::log(run.n_act), std::log(run.tokens), log_loss, weight,
                                 static_cast<std::size_t>(it - set.distinct_experts.begin())});
  }
  const double mean_weight = weight_sum / static_cast<double>(std::max<std::size_t>(1, which.size()));
  for (Sample& s : set.samples) s.sqrt_weight = std::sqrt(s.sqrt_weight / mean_weight);
  if (objective == Objective::paper) {
    // The authors' penalty covers the raw parameters of their law; a dense law has five.
    if (shape == FitShape::dense)
      set.regularised = {kLogA, kAlpha, kLogB, kBeta, kLogC};
    else
      set.regularised = {kLogA, kAlpha, kGamma, kDelta,     kLogB,       kBeta,
                         kZeta, kOmega, kLogC,  kLogEStart, kInverseEMax};
  }
  return set;
}

// Whether a value and, for a Jet, every derivative is finite: an overflow in a derivative alone would
// otherwise reach Ceres, which rejects the step but logs a page of diagnostics.
inline bool all_finite(double value) { return std::isfinite(value); }
template <int N>
bool all_finite(const ceres::Jet<double, N>& value) {
  return std::isfinite(value.a) && value.v.allFinite();
}

// All residuals in one autodiff cost function, so ln Ê is computed once per distinct E rather than
// once per run. The Huber loss is folded into each residual as sign(r)·√(2·wᵢ·H_δ(r)), which makes
// Ceres's cost ½·Σ r̃² exactly Σ wᵢ·H_δ(ln L̂ − ln L); the paper objective's penalty adds one residual
// √(2λ)·p per regularised parameter p (in raw form: ln E_max = −ln(1/E_max)).
struct LawResiduals {
  const TrainingSet* set;
  double delta;

  template <typename T>
  bool operator()(const T* x, T* residuals) const {
    using std::exp;
    using std::log;
    using std::sqrt;
    const T e_start = exp(x[kLogEStart]);
    if (!(x[kInverseEMax] * e_start < 1.0))
      return false;  // E_max ≤ E_start: Ê undefined; Ceres rejects the step
    std::vector<T> log_ehat;
    log_ehat.reserve(set->distinct_experts.size());
    for (const double experts : set->distinct_experts)
      log_ehat.push_back(detail::log_transformed_experts_inv(experts, e_start, x[kInverseEMax]));
    const std::size_t n = set->samples.size();
    for (std::size_t i = 0; i < n; ++i) {
      const Sample& s = set->samples[i];
      const T r =
          detail::log_predicted_loss(x[kLogA], x[kAlpha], x[kGamma], x[kDelta], x[kLogB], x[kBeta], x[kZeta],
                                     x[kOmega], x[kLogC], log_ehat[s.expert_index], s.log_n, s.log_d) -
          s.log_loss;
      if (r > delta)
        residuals[i] = sqrt(2.0 * delta * r - delta * delta);
      else if (r < -delta)
        residuals[i] = -sqrt(-2.0 * delta * r - delta * delta);
      else
        residuals[i] = r;
      residuals[i] *= s.sqrt_weight;
      if (!all_finite(residuals[i])) return false;  // overflow: Ceres rejects the step quietly
    }
    const double scale = std::sqrt(2.0 * kPaperRegularisation);
    for (std::size_t j = 0; j < set->regularised.size(); ++j) {
      const int p = set->regularised[j];
      residuals[n + j] = p == kInverseEMax ? -scale * log(x[p]) : scale * x[p];
      if (!all_finite(residuals[n + j])) return false;
    }
    return true;
  }
};

struct Solution {
  ParamVector x{};
  double objective = std::numeric_limits<double>::infinity();
  bool converged = false;
};

// One problem (a set of fitted runs, its objective and shape) that many threads solve from different
// starts. Ceres cost functions are stateless on Evaluate, so one instance serves every thread.
class LawProblem {
 public:
  LawProblem(TrainingSet set, double huber_delta, FitShape shape)
      : set_(std::move(set)),
        cost_(new LawResiduals{&set_, huber_delta},
              static_cast<int>(set_.samples.size() + set_.regularised.size())),
        fixed_(fixed_params(shape)),
        manifold_(kParams, fixed_),
        shape_(shape) {}
  LawProblem(const LawProblem&) = delete;  // the cost function points into set_
  LawProblem& operator=(const LawProblem&) = delete;

  // The objective at x, +∞ where the law cannot be evaluated.
  double objective(const ParamVector& x) const {
    const double* parameters[] = {x.data()};
    std::vector<double> residuals(static_cast<std::size_t>(cost_.num_residuals()));
    if (!cost_.Evaluate(parameters, residuals.data(), nullptr))
      return std::numeric_limits<double>::infinity();
    double cost = 0;
    for (const double r : residuals) cost += 0.5 * r * r;
    return std::isfinite(cost) ? cost : std::numeric_limits<double>::infinity();
  }

  Solution solve(const ParamVector& start, int max_iterations) const {
    Solution solution;
    solution.x = start;
    // The problem borrows the shared cost function and manifold; Ceres takes them as non-const but
    // only calls their const methods, which is what makes sharing them across threads safe.
    ceres::Problem::Options problem_options;
    problem_options.cost_function_ownership = ceres::DO_NOT_TAKE_OWNERSHIP;
    problem_options.manifold_ownership = ceres::DO_NOT_TAKE_OWNERSHIP;
    ceres::Problem problem(problem_options);
    double* x = solution.x.data();
    problem.AddResidualBlock(const_cast<CostFunction*>(&cost_), nullptr, x);
    if (!fixed_.empty()) problem.SetManifold(x, const_cast<ceres::SubsetManifold*>(&manifold_));
    if (shape_ == FitShape::joint) {
      // Ê at E = 1 is E_start: below one expert's worth the transform has no meaning, and without
      // this bound noisy data can trade E_start, E_max and the exponents against each other freely.
      problem.SetParameterLowerBound(x, kLogEStart, std::log(kMinEStart));
      // E_max ≤ kMaxEMax: a fit at this bound means the runs show no saturation of the benefit of
      // experts, and the report says E_max is not identified rather than printing a huge number.
      problem.SetParameterLowerBound(x, kInverseEMax, 1.0 / kMaxEMax);
    }

    ceres::Solver::Options options;
    options.linear_solver_type = ceres::DENSE_QR;
    options.max_num_iterations = max_iterations;
    options.function_tolerance = 1e-9;
    options.gradient_tolerance = 1e-10;
    options.parameter_tolerance = 1e-9;
    options.num_threads = 1;  // parallelism is across starts
    options.logging_type = ceres::SILENT;
    ceres::Solver::Summary summary;
    ceres::Solve(options, &problem, &summary);
    solution.converged = summary.termination_type == ceres::CONVERGENCE && std::isfinite(summary.final_cost);
    solution.objective =
        std::isfinite(summary.final_cost) ? summary.final_cost : std::numeric_limits<double>::infinity();
    return solution;
  }

 private:
  using CostFunction = ceres::AutoDiffCostFunction<LawResiduals, ceres::DYNAMIC, kParams>;
  TrainingSet set_;
  CostFunction cost_;
  std::vector<int> fixed_;
  ceres::SubsetManifold manifold_;
  FitShape shape_;
};

Coefficients to_coefficients(const ParamVector& x, LawForm form) {
  return Coefficients{std::exp(x[kLogA]),
                      x[kAlpha],
                      x[kGamma],
                      x[kDelta],
                      std::exp(x[kLogB]),
                      x[kBeta],
                      x[kZeta],
                      x[kOmega],
                      std::exp(x[kLogC]),
                      std::exp(x[kLogEStart]),
                      1.0 / x[kInverseEMax],
                      form};
}

ParamVector to_params(const Coefficients& k) {
  return {std::log(k.a), k.alpha, k.gamma, k.delta,       std::log(k.b),
          k.beta,        k.zeta,  k.omega, std::log(k.c), std::log(k.e_start),
          1.0 / k.e_max};
}

// Runs body(i) for i in [0, count) on `threads` threads; reports progress about every 1%.
template <typename Body>
void parallel_for(std::size_t count, unsigned threads, std::string_view stage,
                  const std::function<void(std::string_view, std::size_t, std::size_t)>& progress,
                  Body body) {
  std::atomic<std::size_t> next{0};
  std::atomic<std::size_t> done{0};
  std::mutex progress_mutex;
  const std::size_t report_every = std::max<std::size_t>(1, count / 100);
  auto worker = [&] {
    for (std::size_t i = next++; i < count; i = next++) {
      body(i);
      const std::size_t finished = ++done;
      if (progress && (finished % report_every == 0 || finished == count)) {
        const std::lock_guard lock(progress_mutex);
        progress(stage, finished, count);
      }
    }
  };
  std::vector<std::jthread> pool;
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
}

// The grid points to start from: all of them, or `wanted` of them. A subset steps through the grid's
// index by a golden-ratio stride not divisible by 3, so every coefficient's levels all get used
// (a plain stride of 27 would pin the first three coefficients to their first level).
std::vector<ParamVector> start_points(FitShape shape, double min_log_loss, std::size_t wanted) {
  const std::vector<int> free_params = grid_params(shape);
  std::size_t grid_size = 1;
  for (std::size_t i = 0; i < free_params.size(); ++i) grid_size *= 3;
  const std::size_t count = std::clamp<std::size_t>(wanted, 1, grid_size);
  auto stride = static_cast<std::size_t>(std::llround(0.6180339887 * static_cast<double>(grid_size)));
  if (stride % 3 == 0) ++stride;  // coprime with 3^k, so the count indices below are distinct

  ParamVector base{};
  // Free E_start and E_max start at 2 and 200; a fixed transform sits at the published values; a
  // dense law keeps its placeholders (law.h), which have no effect.
  const Coefficients paper = paper_coefficients();
  base[kLogEStart] = std::log(shape == FitShape::fixed_transform ? paper.e_start
                              : shape == FitShape::dense         ? kDenseEStart
                                                                 : 2.0);
  base[kInverseEMax] = 1.0 / (shape == FitShape::fixed_transform ? paper.e_max
                              : shape == FitShape::dense         ? kDenseEMax
                                                                 : 200.0);
  std::vector<ParamVector> starts;
  for (std::size_t j = 0; j < count; ++j) {
    std::size_t index = count == grid_size ? j : j * stride % grid_size;
    ParamVector x = base;
    for (const int param : free_params) {
      x[param] = grid_levels(param, min_log_loss)[index % 3];
      index /= 3;
    }
    starts.push_back(x);
  }
  return starts;
}

// Whether two solver vectors lie in different basins: some parameter differs by more than 2% of its
// size (plus 0.02 absolute); polishes of one basin agree far closer than that.
bool distinct_from(const ParamVector& a, const ParamVector& b) {
  for (int p = 0; p < kParams; ++p) {
    const double u = p == kInverseEMax ? std::log(a[p]) : a[p], v = p == kInverseEMax ? std::log(b[p]) : b[p];
    if (std::abs(u - v) > 0.02 * (1 + std::abs(v))) return true;
  }
  return false;
}

struct MultiStart {
  std::size_t screened = 0;
  std::vector<Solution> shortlist;  // after the short solves, lowest objective first
  std::vector<Solution> polished;   // solved to convergence, lowest objective first
  const Solution* best = nullptr;   // the converged polish with the lowest objective; null when none
};

// Multi-start in three stages, so the full 3^9 grid costs seconds rather than minutes:
//   1. screen: the objective at every grid start;
//   2. short solves: the kShortlisted lowest get kShortIterations Levenberg–Marquardt iterations;
//   3. polish: the kPolished lowest after stage 2 are solved to convergence.
// The winner is the converged polish with the lowest objective.
MultiStart multi_start(const LawProblem& problem, FitShape shape, double min_log_loss,
                       const FitOptions& options, unsigned threads, bool report_progress) {
  const auto progress = report_progress ? options.progress : nullptr;
  const std::vector<ParamVector> starts = start_points(shape, min_log_loss, options.starts);
  MultiStart result;
  result.screened = starts.size();
  std::vector<Solution> screened(starts.size());
  parallel_for(starts.size(), threads, "screen", progress, [&](std::size_t i) {
    screened[i] = Solution{starts[i], problem.objective(starts[i]), false};
  });
  auto lowest_first = [](const Solution& l, const Solution& r) { return l.objective < r.objective; };
  auto keep_lowest = [&](std::vector<Solution>& solutions, std::size_t count) {
    count = std::min(count, solutions.size());
    std::partial_sort(solutions.begin(), solutions.begin() + static_cast<std::ptrdiff_t>(count),
                      solutions.end(), lowest_first);
    solutions.resize(count);
    while (!solutions.empty() && !std::isfinite(solutions.back().objective)) solutions.pop_back();
  };
  keep_lowest(screened, kShortlisted);
  result.shortlist.resize(screened.size());
  parallel_for(screened.size(), threads, "short solves", progress, [&](std::size_t i) {
    result.shortlist[i] = problem.solve(screened[i].x, std::min(kShortIterations, options.max_iterations));
  });
  std::stable_sort(result.shortlist.begin(), result.shortlist.end(), lowest_first);
  while (!result.shortlist.empty() && !std::isfinite(result.shortlist.back().objective))
    result.shortlist.pop_back();
  const std::size_t polish_count = std::min(kPolished, result.shortlist.size());
  result.polished.resize(polish_count);
  parallel_for(polish_count, threads, "polish", progress, [&](std::size_t i) {
    result.polished[i] = problem.solve(result.shortlist[i].x, options.max_iterations);
  });
  // Converged first, each group lowest objective first; the order is deterministic (stable sort of a
  // deterministic list), so the result does not depend on threading.
  std::stable_sort(result.polished.begin(), result.polished.end(), [](const Solution& l, const Solution& r) {
    if (l.converged != r.converged) return l.converged;
    return l.objective < r.objective;
  });
  if (!result.polished.empty() && result.polished.front().converged) result.best = &result.polished.front();
  return result;
}

double percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  const double position = p * static_cast<double>(values.size() - 1);
  const auto below = static_cast<std::size_t>(std::floor(position));
  const std::size_t above = std::min(below + 1, values.size() - 1);
  return values[below] + (position - static_cast<double>(below)) * (values[above] - values[below]);
}

Interval interval_of(const std::vector<double>& values) {
  return values.size() < 2 ? Interval{} : Interval{percentile(values, 0.05), percentile(values, 0.95)};
}

double standard_deviation(const std::vector<double>& values) {
  if (values.size() < 2) return std::numeric_limits<double>::quiet_NaN();
  double mean = 0;
  for (const double v : values) mean += v / static_cast<double>(values.size());
  double variance = 0;
  for (const double v : values) variance += (v - mean) * (v - mean) / static_cast<double>(values.size() - 1);
  return std::sqrt(variance);
}

// The planner headline for a law: compute-optimal (N_act, D, loss) at `flops` per E; a dense law has
// nothing to say about E > 1. Empty when the law has no interior optimum.
std::vector<Optimum> headline_answers(const Coefficients& k, double flops) {
  try {
    std::vector<Optimum> optima = compute_optimal(k, Budget{flops});
    if (k.form == LawForm::dense) optima.resize(1);
    return optima;
  } catch (const std::runtime_error&) {
    return {};
  }
}

std::vector<std::size_t> without(const std::vector<std::size_t>& all,
                                 const std::vector<std::size_t>& removed) {
  const std::set<std::size_t> gone(removed.begin(), removed.end());
  std::vector<std::size_t> kept;
  for (const std::size_t i : all)
    if (gone.count(i) == 0) kept.push_back(i);
  return kept;
}

std::vector<std::size_t> at_or_above_floor(const std::vector<Run>& runs,
                                           const std::vector<std::size_t>& which, double floor) {
  std::vector<std::size_t> kept;
  for (const std::size_t i : which)
    if (runs[i].tokens >= floor * runs[i].n_act) kept.push_back(i);
  return kept;
}

std::set<double> expert_counts(const std::vector<Run>& runs, const std::vector<std::size_t>& which) {
  std::set<double> counts;
  for (const std::size_t i : which) counts.insert(runs[i].experts);
  return counts;
}

std::size_t distinct_points(const std::vector<Run>& runs, const std::vector<std::size_t>& which) {
  std::set<std::array<double, 3>> points;
  for (const std::size_t i : which) points.insert({runs[i].n_act, runs[i].tokens, runs[i].experts});
  return points.size();
}

double min_log_loss_of(const std::vector<Run>& runs, const std::vector<std::size_t>& which) {
  double lowest = std::numeric_limits<double>::infinity();
  for (const std::size_t i : which) lowest = std::min(lowest, std::log(runs[i].loss));
  return lowest;
}

std::string format_number(double value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

std::string join_counts(const std::set<double>& counts) {
  std::string text;
  for (const double e : counts) text += (text.empty() ? "" : ", ") + format_number(e);
  return text;
}

// The shape the fitted runs support: dense when every run has E = 1; the joint law with a fixed
// transform below kMinExpertCountsForTransform expert counts. One expert count E > 1 is bad input.
FitShape shape_for(const std::vector<Run>& runs, const std::vector<std::size_t>& fitted) {
  const std::set<double> counts = expert_counts(runs, fitted);
  if (counts.size() == 1 && *counts.begin() == 1) return FitShape::dense;
  if (counts.size() == 1)
    throw InputError("all " + std::to_string(fitted.size()) +
                     " fitted runs have E = " + format_number(*counts.begin()) +
                     ": with one expert count the law's expert terms cannot be fitted; add runs at other E "
                     "(dense E = 1 runs at least)");
  return counts.size() < kMinExpertCountsForTransform ? FitShape::fixed_transform : FitShape::joint;
}

}  // namespace

HeldoutRule parse_heldout_rule(const std::string& text, const std::string& option) {
  const auto colon = text.find(':');
  const std::string kind = text.substr(0, colon);
  HeldoutRule rule;
  if (kind == "lowest-loss")
    rule.kind = HeldoutRule::Kind::lowest_loss;
  else if (kind == "top-compute")
    rule.kind = HeldoutRule::Kind::top_compute;
  else if (kind == "largest-n")
    rule.kind = HeldoutRule::Kind::largest_n;
  else
    throw InputError::at(option, 0, "", "'" + text + "': use lowest-loss:K, top-compute:K or largest-n:K");
  if (colon == std::string::npos) return rule;  // K defaults to 10
  const std::string count = text.substr(colon + 1);
  if (count.empty() || count.size() > 9 || count.find_first_not_of("0123456789") != std::string::npos)
    throw InputError::at(option, 0, "", "'" + text + "': K must be a whole number");
  rule.count = std::stoul(count);
  return rule;
}

std::string to_string(const HeldoutRule& rule) {
  const char* kind = rule.kind == HeldoutRule::Kind::lowest_loss   ? "lowest-loss"
                     : rule.kind == HeldoutRule::Kind::top_compute ? "top-compute"
                                                                   : "largest-n";
  return std::string(kind) + ":" + std::to_string(rule.count);
}

std::vector<std::size_t> select_by_rule(const std::vector<Run>& runs, const std::vector<std::size_t>& among,
                                        const HeldoutRule& rule) {
  std::vector<std::size_t> order = among;
  auto key = [&](std::size_t i) {
    switch (rule.kind) {
      case HeldoutRule::Kind::lowest_loss:
        return runs[i].loss;
      case HeldoutRule::Kind::top_compute:
        return -runs[i].n_act * runs[i].tokens;
      case HeldoutRule::Kind::largest_n:
        return -runs[i].n_act;
    }
    return 0.0;
  };
  std::stable_sort(order.begin(), order.end(), [&](std::size_t l, std::size_t r) { return key(l) < key(r); });
  order.resize(std::min(rule.count, order.size()));
  std::sort(order.begin(), order.end());
  return order;
}

std::vector<std::size_t> select_heldout(const std::vector<Run>& runs, const HeldoutRule& rule) {
  std::vector<std::size_t> all(runs.size());
  std::iota(all.begin(), all.end(), 0);
  return select_by_rule(runs, all, rule);
}

ExcludeRule parse_exclude_rule(const std::string& text) {
  const auto colon = text.find(':');
  const std::string count = colon == std::string::npos ? "" : text.substr(colon + 1);
  if (text.substr(0, colon) != "highest-loss" || count.empty() || count.size() > 9 ||
      count.find_first_not_of("0123456789") != std::string::npos)
    throw InputError::at("--exclude", 0, "", "'" + text + "': use highest-loss:K (K a whole number)");
  return ExcludeRule{std::stoul(count)};
}

std::string to_string(const ExcludeRule& rule) { return "highest-loss:" + std::to_string(rule.highest_loss); }

Objective parse_objective(const std::string& text) {
  if (text == "huber") return Objective::huber;
  if (text == "paper") return Objective::paper;
  throw InputError::at("--objective", 0, "", "'" + text + "': use huber or paper");
}

std::string to_string(Objective objective) { return objective == Objective::paper ? "paper" : "huber"; }

DomainChoice choose_training_domain(const std::vector<FloorCandidate>& candidates,
                                    const DomainChoiceOptions& options) {
  auto usable = [](const FloorCandidate& c) {
    return c.eligible && c.converged && c.validation.n > 0 && std::isfinite(c.validation.rmse_log);
  };
  DomainChoice choice;
  std::optional<std::size_t> best;
  for (std::size_t i = 0; i < candidates.size(); ++i)
    if (usable(candidates[i]) &&
        (!best || candidates[i].validation.rmse_log < candidates[*best].validation.rmse_log))
      best = i;
  if (!best) {
    choice.reason =
        "no floor had enough runs and a converged fit to validate, so every training run is fitted";
    return choice;
  }
  const double limit = candidates[*best].validation.rmse_log * (1 + std::max(0.0, options.margin)) +
                       std::max(0.0, options.absolute_tolerance);
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    const FloorCandidate& c = candidates[i];
    if (!usable(c) || c.validation.rmse_log > limit) continue;
    if (!choice.chosen || c.min_tokens_per_param < candidates[*choice.chosen].min_tokens_per_param)
      choice.chosen = i;
  }
  const FloorCandidate& chosen = candidates[*choice.chosen];
  std::ostringstream reason;
  reason.precision(3);
  reason << "the lowest floor whose fit (" << chosen.fitted_runs << " runs) predicts the "
         << chosen.validation.n << " validation runs within " << 100 * options.margin
         << "% of the best floor's RMSE(ln L) (" << chosen.validation.rmse_log << "; best "
         << candidates[*best].validation.rmse_log << " at D/N >= " << candidates[*best].min_tokens_per_param
         << ")";
  choice.reason = reason.str();
  return choice;
}

std::vector<std::string> coefficients_at_bounds(const Coefficients& k) {
  std::vector<std::string> names;
  if (k.form == LawForm::dense) return names;
  if (k.e_start <= kMinEStart * (1 + 1e-9)) names.emplace_back("e_start");
  if (e_max_at_bound(k.e_max)) names.emplace_back("e_max");
  return names;
}

ErrorSummary error_summary(const Coefficients& k, const std::vector<Run>& runs,
                           const std::vector<std::size_t>& which) {
  ErrorSummary summary;
  summary.n = which.size();
  if (which.empty()) return summary;
  double squares = 0;
  for (const std::size_t i : which) {
    const double predicted = predict_loss(k, runs[i].n_act, runs[i].tokens, runs[i].experts);
    const double log_error = std::log(predicted) - std::log(runs[i].loss);
    squares += log_error * log_error;
    summary.max_abs_error = std::max(summary.max_abs_error, std::abs(predicted - runs[i].loss));
  }
  summary.rmse_log = std::sqrt(squares / static_cast<double>(which.size()));
  return summary;
}

double objective_value(const Coefficients& k, const std::vector<Run>& runs,
                       const std::vector<std::size_t>& which, Objective objective, double huber_delta) {
  const FitShape shape = k.form == LawForm::dense ? FitShape::dense : FitShape::joint;
  const LawProblem problem(make_training_set(runs, which, objective, shape), huber_delta, shape);
  return problem.objective(to_params(k));
}

FitResult fit_law(const std::vector<Run>& runs, const FitOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  if (!(options.huber_delta > 0)) throw InputError::at("--huber-delta", 0, "", "must be positive");
  if (options.min_tokens_per_param && !(*options.min_tokens_per_param >= 0))
    throw InputError::at("--min-tokens-per-param", 0, "", "must be 'auto' or a number >= 0");
  FitResult result;
  const unsigned threads =
      options.threads > 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency());

  // Exclude, hold out, carve the validation runs: each step only ever sees what the previous one kept.
  std::vector<std::size_t> all(runs.size());
  std::iota(all.begin(), all.end(), 0);
  {
    std::vector<std::size_t> by_loss = all;
    std::stable_sort(by_loss.begin(), by_loss.end(),
                     [&](std::size_t l, std::size_t r) { return runs[l].loss > runs[r].loss; });
    by_loss.resize(std::min(options.exclude.highest_loss, by_loss.size()));
    std::sort(by_loss.begin(), by_loss.end());
    result.excluded = by_loss;
  }
  const std::vector<std::size_t> kept = without(all, result.excluded);
  result.heldout = select_by_rule(runs, kept, options.heldout);
  result.training = without(kept, result.heldout);
  auto describe_split = [&] {
    std::string text = std::to_string(runs.size()) + " runs";
    if (!result.excluded.empty())
      text +=
          ", " + std::to_string(result.excluded.size()) + " excluded (" + to_string(options.exclude) + ")";
    return text + ", " + std::to_string(result.heldout.size()) + " held out (" + to_string(options.heldout) +
           ")";
  };
  if (result.training.empty()) throw InputError(describe_split() + " leave no runs to fit");

  // The shape the training runs support; checked again on the fitted runs once the floor is known.
  const FitShape training_shape = shape_for(runs, result.training);
  const std::size_t training_coefficients = fitted_count(training_shape);

  // The training domain.
  TrainingDomain& domain = result.domain;
  domain.validation_rule = options.validation.value_or(options.heldout);
  const std::set<double> training_experts = expert_counts(runs, result.training);
  if (options.min_tokens_per_param) {
    domain.min_tokens_per_param = *options.min_tokens_per_param;
    domain.validation_rule.count = 0;
    domain.reason = "given (--min-tokens-per-param)";
  } else if (domain.validation_rule.count == 0) {
    domain.reason =
        "no validation runs (" + to_string(domain.validation_rule) + "), so every training run is fitted";
  } else {
    domain.validation = select_by_rule(runs, result.training, domain.validation_rule);
    const std::vector<std::size_t> rest = without(result.training, domain.validation);
    std::vector<std::vector<std::size_t>> fitted_sets;
    for (const double floor : options.floors) {
      FloorCandidate candidate;
      candidate.min_tokens_per_param = floor;
      fitted_sets.push_back(at_or_above_floor(runs, rest, floor));
      const std::vector<std::size_t>& set = fitted_sets.back();
      candidate.fitted_runs = set.size();
      candidate.eligible = set.size() >= kMinRunsPerCoefficientForFloor * training_coefficients &&
                           distinct_points(runs, set) >= training_coefficients &&
                           expert_counts(runs, set) == training_experts;
      domain.candidates.push_back(candidate);
    }
    // Fit each eligible floor (a floor that keeps the same runs as a lower one reuses its figures).
    for (std::size_t f = 0; f < domain.candidates.size(); ++f) {
      FloorCandidate& candidate = domain.candidates[f];
      if (options.progress) options.progress("validation", f, domain.candidates.size());
      if (!candidate.eligible) continue;
      const auto same = std::find(fitted_sets.begin(), fitted_sets.begin() + static_cast<std::ptrdiff_t>(f),
                                  fitted_sets[f]);
      if (same != fitted_sets.begin() + static_cast<std::ptrdiff_t>(f)) {
        const FloorCandidate& earlier =
            domain.candidates[static_cast<std::size_t>(same - fitted_sets.begin())];
        candidate.converged = earlier.converged;
        candidate.validation = earlier.validation;
        continue;
      }
      const LawProblem problem(make_training_set(runs, fitted_sets[f], options.objective, training_shape),
                               options.huber_delta, training_shape);
      const MultiStart fit = multi_start(problem, training_shape, min_log_loss_of(runs, fitted_sets[f]),
                                         options, threads, false);
      if (fit.best == nullptr) continue;
      const Coefficients k = to_coefficients(fit.best->x, form_of(training_shape));
      candidate.validation = error_summary(k, runs, domain.validation);
      candidate.converged = std::isfinite(candidate.validation.rmse_log);
    }
    if (options.progress) options.progress("validation", domain.candidates.size(), domain.candidates.size());
    const DomainChoice choice = choose_training_domain(domain.candidates, options.domain_choice);
    domain.reason = choice.reason;
    if (choice.chosen) {
      domain.min_tokens_per_param = domain.candidates[*choice.chosen].min_tokens_per_param;
      domain.by_validation = true;
    }
  }
  result.fitted_runs = at_or_above_floor(runs, result.training, domain.min_tokens_per_param);
  result.below_floor = without(result.training, result.fitted_runs);

  // The fitted runs must determine the coefficients.
  const std::string floor_text =
      domain.min_tokens_per_param > 0
          ? " at or above D/N = " + format_number(domain.min_tokens_per_param) + " (" + domain.reason + ")"
          : "";
  if (result.fitted_runs.empty()) throw InputError(describe_split() + " leave no runs to fit" + floor_text);
  const FitShape shape = shape_for(runs, result.fitted_runs);
  const LawForm form = form_of(shape);
  const std::size_t fitted = fitted_count(shape);
  if (result.fitted_runs.size() < fitted)
    throw InputError(describe_split() + " leave " + std::to_string(result.fitted_runs.size()) + " to fit" +
                     floor_text + " " + std::to_string(fitted) + " coefficients; need at least " +
                     std::to_string(fitted));
  // Repeats of one (N_act, D, E) point add no information about the law's shape: a sweep that ran one
  // configuration many times (or a CSV of duplicated rows) would otherwise "fit" exactly and look valid.
  const std::size_t points = distinct_points(runs, result.fitted_runs);
  if (points < fitted)
    throw InputError(std::to_string(result.fitted_runs.size()) + " fitted runs hold only " +
                     std::to_string(points) + " distinct (n_act, tokens, experts) points to fit " +
                     std::to_string(fitted) + " coefficients; need at least " + std::to_string(fitted));
  const std::vector<int> fixed = fixed_params(shape);
  for (int p = 0; p < kParams; ++p)
    result.fitted[static_cast<std::size_t>(p)] = std::find(fixed.begin(), fixed.end(), p) == fixed.end();
  if (shape == FitShape::fixed_transform) {
    result.expert_transform_fixed = true;
    const Coefficients paper = paper_coefficients();
    result.warnings.push_back(
        "only " + std::to_string(expert_counts(runs, result.fitted_runs).size()) +
        " distinct expert counts (E = " + join_counts(expert_counts(runs, result.fitted_runs)) +
        "): E_start and E_max are not identified, so they are held at the published " +
        format_number(paper.e_start) + " and " + format_number(paper.e_max) +
        "; predictions at other E rest on that assumption");
  }
  if (result.fitted_runs.size() < kFewRunsPerCoefficient * fitted)
    result.warnings.push_back(
        std::to_string(result.fitted_runs.size()) + " fitted runs for " + std::to_string(fitted) +
        " coefficients (fewer than " + std::to_string(kFewRunsPerCoefficient) +
        " per coefficient): the fit can follow the noise, and its intervals are not reliable");

  // The fit. The held-out runs are not in any problem at all, so they cannot influence any stage.
  const LawProblem problem(make_training_set(runs, result.fitted_runs, options.objective, shape),
                           options.huber_delta, shape);
  const MultiStart main_fit =
      multi_start(problem, shape, min_log_loss_of(runs, result.fitted_runs), options, threads, true);
  result.starts = main_fit.screened;
  result.polished = main_fit.polished.size();
  for (const Solution& s : main_fit.polished) result.converged_starts += s.converged ? 1 : 0;
  if (main_fit.best == nullptr)
    throw std::runtime_error("the fit did not converge from any of the " + std::to_string(main_fit.screened) +
                             " starting points (none of the " + std::to_string(main_fit.polished.size()) +
                             " best converged within the limit of " + std::to_string(options.max_iterations) +
                             " solver iterations); no report written");
  const Solution& best = *main_fit.best;
  result.coefficients = to_coefficients(best.x, form);
  result.objective = best.objective;
  result.train = error_summary(result.coefficients, runs, result.fitted_runs);
  result.below_floor_errors = error_summary(result.coefficients, runs, result.below_floor);
  result.heldout_errors = error_summary(result.coefficients, runs, result.heldout);
  if (!std::isfinite(result.train.rmse_log) || !std::isfinite(result.heldout_errors.rmse_log) ||
      !std::isfinite(result.below_floor_errors.rmse_log))
    throw std::runtime_error(
        "the fit converged to coefficients whose predictions are not finite numbers; "
        "no report written");
  const std::vector<Optimum> headline = headline_answers(result.coefficients, options.headline_flops);

  // Bootstrap: resample the fitted runs with replacement and refit from several starts: the chosen fit,
  // then the best polished solutions of other basins, then the best short solves, each distinct from
  // those already taken. A refit keeps its lowest converged objective; one that converges from none of
  // its starts is counted as failed, never dropped silently.
  std::vector<ParamVector> bootstrap_starts = {best.x};
  for (const std::vector<Solution>* pool : {&main_fit.polished, &main_fit.shortlist})
    for (const Solution& s : *pool) {
      if (bootstrap_starts.size() >= std::max<std::size_t>(1, options.bootstrap_starts)) break;
      if (!std::isfinite(s.objective)) continue;
      if (std::all_of(bootstrap_starts.begin(), bootstrap_starts.end(),
                      [&](const ParamVector& x) { return distinct_from(s.x, x); }))
        bootstrap_starts.push_back(s.x);
    }
  enum class Outcome { converged, underdetermined, failed };
  std::vector<Outcome> outcomes(options.bootstrap, Outcome::failed);
  std::vector<Solution> replicates(options.bootstrap);
  parallel_for(options.bootstrap, threads, "bootstrap", options.progress, [&](std::size_t b) {
    std::seed_seq seed{static_cast<std::uint64_t>(options.seed), static_cast<std::uint64_t>(b)};
    std::mt19937_64 rng(seed);  // one stream per replicate: the result does not depend on threading
    std::uniform_int_distribution<std::size_t> pick(0, result.fitted_runs.size() - 1);
    std::vector<std::size_t> resample(result.fitted_runs.size());
    for (std::size_t& i : resample) i = result.fitted_runs[pick(rng)];
    if (distinct_points(runs, resample) < fitted) {
      outcomes[b] = Outcome::underdetermined;
      return;
    }
    const LawProblem replicate(make_training_set(runs, resample, options.objective, shape),
                               options.huber_delta, shape);
    for (const ParamVector& start : bootstrap_starts) {
      const Solution s = replicate.solve(start, options.max_iterations);
      if (s.converged && (outcomes[b] != Outcome::converged || s.objective < replicates[b].objective)) {
        replicates[b] = s;
        outcomes[b] = Outcome::converged;
      }
    }
  });
  result.bootstrap_fits = options.bootstrap;
  if (options.bootstrap > 0) {
    std::array<std::vector<double>, kCoefficientCount> coefficient_samples;
    std::vector<std::array<std::vector<double>, 3>> headline_samples(headline.size());
    for (std::size_t b = 0; b < options.bootstrap; ++b) {
      if (outcomes[b] == Outcome::underdetermined) ++result.bootstrap_underdetermined;
      if (outcomes[b] == Outcome::failed) ++result.bootstrap_failed;
      if (outcomes[b] != Outcome::converged) continue;
      ++result.bootstrap_converged;
      const Coefficients k = to_coefficients(replicates[b].x, form);
      const auto values = to_array(k);
      for (std::size_t c = 0; c < kCoefficientCount; ++c) coefficient_samples[c].push_back(values[c]);
      const std::vector<Optimum> answers = headline_answers(k, options.headline_flops);
      if (answers.size() != headline.size()) continue;
      for (std::size_t e = 0; e < answers.size(); ++e) {
        headline_samples[e][0].push_back(answers[e].n_act);
        headline_samples[e][1].push_back(answers[e].tokens);
        headline_samples[e][2].push_back(answers[e].loss);
      }
    }
    for (std::size_t c = 0; c < kCoefficientCount; ++c) {
      const bool free = result.fitted[c];
      result.coefficient_intervals.push_back(free ? interval_of(coefficient_samples[c]) : Interval{});
      result.coefficient_se.push_back(free ? standard_deviation(coefficient_samples[c])
                                           : std::numeric_limits<double>::quiet_NaN());
    }
    for (std::size_t e = 0; e < headline.size(); ++e)
      result.headline.push_back(HeadlineInterval{headline[e], interval_of(headline_samples[e][0]),
                                                 interval_of(headline_samples[e][1]),
                                                 interval_of(headline_samples[e][2])});
    const std::size_t unusable = result.bootstrap_underdetermined + result.bootstrap_failed;
    if (10 * unusable > options.bootstrap || result.bootstrap_converged < 2) {
      result.intervals_reliable = false;
      result.warnings.push_back(
          std::to_string(result.bootstrap_underdetermined) + " of " + std::to_string(options.bootstrap) +
          " bootstrap resamples had fewer distinct points than coefficients and " +
          std::to_string(result.bootstrap_failed) +
          " refits converged from none of their starts: the intervals are not reliable");
    }
  } else {
    for (const Optimum& o : headline) result.headline.push_back(HeadlineInterval{o, {}, {}, {}});
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return result;
}

}  // namespace moesweep::analysis
