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

// The nine coefficients the start grid spans, and the six a dense-only fit holds fixed (at zero, and
// at the E_start/E_max starting values, which then have no effect on the loss).
constexpr std::array<int, 9> kGridParams = {kLogA, kAlpha, kGamma, kDelta, kLogB,
                                            kBeta, kZeta,  kOmega, kLogC};
constexpr std::array<int, 5> kDenseGridParams = {kLogA, kAlpha, kLogB, kBeta, kLogC};
const std::vector<int> kDenseFixedParams = {kGamma, kDelta, kZeta, kOmega, kLogEStart, kInverseEMax};

// Three levels per coefficient, wide enough to cover published LLM fits (Chinchilla, the paper) and
// small CPU sweeps. c's levels are fractions of the lowest training loss, since c must lie below it.
// E_start and E_max always start at 2 and 200; every solve fits them.
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
  std::size_t expert_index;  // into the distinct expert counts
};

struct TrainingSet {
  std::vector<Sample> samples;
  std::vector<double> distinct_experts;
};

TrainingSet make_training_set(const std::vector<Run>& runs, const std::vector<std::size_t>& which) {
  TrainingSet set;
  for (const std::size_t i : which) {
    const Run& run = runs[i];
    auto it = std::find(set.distinct_experts.begin(), set.distinct_experts.end(), run.experts);
    if (it == set.distinct_experts.end())
      it = set.distinct_experts.insert(set.distinct_experts.end(), run.experts);
    set.samples.push_back(Sample{std::log(run.n_act), std::log(run.tokens), std::log(run.loss),
                                 static_cast<std::size_t>(it - set.distinct_experts.begin())});
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

// All training residuals in one autodiff cost function, so ln Ê is computed once per distinct E
// rather than once per run. The Huber loss is folded into each residual as sign(r)·√(2·H_δ(r)), which
// makes Ceres's cost ½·Σ r̃² exactly the authors' objective Σ H_δ(ln L̂ − ln L).
struct HuberLogResiduals {
  const TrainingSet* set;
  double delta;

  template <typename T>
  bool operator()(const T* x, T* residuals) const {
    using std::exp;
    using std::sqrt;
    const T e_start = exp(x[kLogEStart]);
    if (!(x[kInverseEMax] * e_start < 1.0))
      return false;  // E_max ≤ E_start: Ê undefined; Ceres rejects the step
    std::vector<T> log_ehat;
    log_ehat.reserve(set->distinct_experts.size());
    for (const double experts : set->distinct_experts)
      log_ehat.push_back(detail::log_transformed_experts_inv(experts, e_start, x[kInverseEMax]));
    for (std::size_t i = 0; i < set->samples.size(); ++i) {
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
      if (!all_finite(residuals[i])) return false;  // overflow: Ceres rejects the step quietly
    }
    return true;
  }
};

struct Solution {
  ParamVector x{};
  double objective = std::numeric_limits<double>::infinity();
  bool converged = false;
};

// One problem (a training set and its form) that many threads solve from different starts. Ceres
// cost functions are stateless on Evaluate, so one instance serves every thread.
class LawProblem {
 public:
  LawProblem(TrainingSet set, double huber_delta, LawForm form)
      : set_(std::move(set)),
        cost_(new HuberLogResiduals{&set_, huber_delta}, static_cast<int>(set_.samples.size())),
        dense_manifold_(kParams, kDenseFixedParams),
        form_(form) {}
  LawProblem(const LawProblem&) = delete;  // the cost function points into set_
  LawProblem& operator=(const LawProblem&) = delete;

  // The training objective Σ H_δ(r) at x, +∞ where the law cannot be evaluated.
  double objective(const ParamVector& x) const {
    const double* parameters[] = {x.data()};
    std::vector<double> residuals(set_.samples.size());
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
    if (form_ == LawForm::dense) {
      problem.SetManifold(x, const_cast<ceres::SubsetManifold*>(&dense_manifold_));
    } else {
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
  using CostFunction = ceres::AutoDiffCostFunction<HuberLogResiduals, ceres::DYNAMIC, kParams>;
  TrainingSet set_;
  CostFunction cost_;
  ceres::SubsetManifold dense_manifold_;
  LawForm form_;
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

// Runs body(i) for i in [0, count) on `threads` threads; reports progress about every 1%.
template <typename Body>
void parallel_for(std::size_t count, unsigned threads, std::string_view stage, const FitOptions& options,
                  Body body) {
  std::atomic<std::size_t> next{0};
  std::atomic<std::size_t> done{0};
  std::mutex progress_mutex;
  const std::size_t report_every = std::max<std::size_t>(1, count / 100);
  auto worker = [&] {
    for (std::size_t i = next++; i < count; i = next++) {
      body(i);
      const std::size_t finished = ++done;
      if (options.progress && (finished % report_every == 0 || finished == count)) {
        const std::lock_guard lock(progress_mutex);
        options.progress(stage, finished, count);
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
std::vector<ParamVector> start_points(LawForm form, double min_log_loss, std::size_t wanted) {
  const std::vector<int> free_params =
      form == LawForm::dense ? std::vector<int>(kDenseGridParams.begin(), kDenseGridParams.end())
                             : std::vector<int>(kGridParams.begin(), kGridParams.end());
  std::size_t grid_size = 1;
  for (std::size_t i = 0; i < free_params.size(); ++i) grid_size *= 3;
  const std::size_t count = std::clamp<std::size_t>(wanted, 1, grid_size);
  auto stride = static_cast<std::size_t>(std::llround(0.6180339887 * static_cast<double>(grid_size)));
  if (stride % 3 == 0) ++stride;  // coprime with 3^k, so the count indices below are distinct

  ParamVector base{};
  base[kLogEStart] = std::log(2.0);
  base[kInverseEMax] = 1.0 / 200.0;
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

double percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  const double position = p * static_cast<double>(values.size() - 1);
  const auto below = static_cast<std::size_t>(std::floor(position));
  const std::size_t above = std::min(below + 1, values.size() - 1);
  return values[below] + (position - static_cast<double>(below)) * (values[above] - values[below]);
}

Interval interval_of(const std::vector<double>& values) {
  return values.empty() ? Interval{} : Interval{percentile(values, 0.05), percentile(values, 0.95)};
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

}  // namespace

HeldoutRule parse_heldout_rule(const std::string& text) {
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
    throw InputError::at("--heldout", 0, "",
                         "'" + text + "': use lowest-loss:K, top-compute:K or largest-n:K");
  if (colon == std::string::npos) return rule;  // K defaults to 10
  const std::string count = text.substr(colon + 1);
  if (count.empty() || count.find_first_not_of("0123456789") != std::string::npos)
    throw InputError::at("--heldout", 0, "", "'" + text + "': K must be a whole number");
  rule.count = std::stoul(count);
  return rule;
}

std::string to_string(const HeldoutRule& rule) {
  const char* kind = rule.kind == HeldoutRule::Kind::lowest_loss   ? "lowest-loss"
                     : rule.kind == HeldoutRule::Kind::top_compute ? "top-compute"
                                                                   : "largest-n";
  return std::string(kind) + ":" + std::to_string(rule.count);
}

std::vector<std::size_t> select_heldout(const std::vector<Run>& runs, const HeldoutRule& rule) {
  std::vector<std::size_t> order(runs.size());
  std::iota(order.begin(), order.end(), 0);
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

FitResult fit_law(const std::vector<Run>& runs, const FitOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  if (!(options.huber_delta > 0)) throw InputError::at("--huber-delta", 0, "", "must be positive");
  FitResult result;
  result.heldout = select_heldout(runs, options.heldout);
  std::vector<std::size_t> training;
  for (std::size_t i = 0, h = 0; i < runs.size(); ++i) {
    if (h < result.heldout.size() && result.heldout[h] == i)
      ++h;
    else
      training.push_back(i);
  }
  const bool dense =
      std::all_of(training.begin(), training.end(), [&](std::size_t i) { return runs[i].experts == 1; });
  const LawForm form = dense ? LawForm::dense : LawForm::joint;
  const std::size_t fitted = dense ? kDenseGridParams.size() : static_cast<std::size_t>(kParams);
  if (training.size() < fitted)
    throw InputError(std::to_string(runs.size()) + " runs with " + std::to_string(result.heldout.size()) +
                     " held out (" + to_string(options.heldout) + ") leave " +
                     std::to_string(training.size()) + " to fit " + std::to_string(fitted) +
                     " coefficients; need at least " + std::to_string(fitted));
  // Repeats of one (N_act, D, E) point add no information about the law's shape: a sweep that ran one
  // configuration many times (or a CSV of duplicated rows) would otherwise "fit" exactly and look valid.
  std::set<std::array<double, 3>> points;
  for (const std::size_t i : training) points.insert({runs[i].n_act, runs[i].tokens, runs[i].experts});
  if (points.size() < fitted)
    throw InputError(std::to_string(training.size()) + " training runs hold only " +
                     std::to_string(points.size()) + " distinct (n_act, tokens, experts) points to fit " +
                     std::to_string(fitted) + " coefficients; need at least " + std::to_string(fitted));

  const unsigned threads =
      options.threads > 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency());
  double min_log_loss = std::numeric_limits<double>::infinity();
  for (const std::size_t i : training) min_log_loss = std::min(min_log_loss, std::log(runs[i].loss));

  // Multi-start in three stages, so the full 3^9 grid costs seconds rather than minutes:
  //   1. screen: the training objective at every grid start;
  //   2. short solves: the kShortlisted lowest get kShortIterations Levenberg–Marquardt iterations;
  //   3. polish: the kPolished lowest after stage 2 are solved to convergence.
  // The winner is the converged polish with the lowest training objective. The held-out runs are not
  // in the problem at all, so they cannot influence any stage.
  const LawProblem problem(make_training_set(runs, training), options.huber_delta, form);
  const std::vector<ParamVector> starts = start_points(form, min_log_loss, options.starts);
  result.starts = starts.size();
  std::vector<Solution> screened(starts.size());
  parallel_for(starts.size(), threads, "screen", options, [&](std::size_t i) {
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
  std::vector<Solution> shortlist(screened.size());
  parallel_for(screened.size(), threads, "short solves", options, [&](std::size_t i) {
    shortlist[i] = problem.solve(screened[i].x, std::min(kShortIterations, options.max_iterations));
  });
  keep_lowest(shortlist, kPolished);
  std::vector<Solution> polished(shortlist.size());
  parallel_for(shortlist.size(), threads, "polish", options,
               [&](std::size_t i) { polished[i] = problem.solve(shortlist[i].x, options.max_iterations); });
  result.polished = polished.size();
  const Solution* best = nullptr;
  for (const Solution& s : polished) {
    if (!s.converged) continue;
    ++result.converged_starts;
    if (best == nullptr || s.objective < best->objective) best = &s;
  }
  if (best == nullptr)
    throw std::runtime_error("the fit did not converge from any of the " + std::to_string(starts.size()) +
                             " starting points (none of the " + std::to_string(polished.size()) +
                             " best converged within the limit of " + std::to_string(options.max_iterations) +
                             " solver iterations); no report written");
  result.coefficients = to_coefficients(best->x, form);
  result.objective = best->objective;
  result.train = error_summary(result.coefficients, runs, training);
  result.heldout_errors = error_summary(result.coefficients, runs, result.heldout);
  if (!std::isfinite(result.train.rmse_log) || !std::isfinite(result.heldout_errors.rmse_log))
    throw std::runtime_error(
        "the fit converged to coefficients whose predictions are not finite numbers; "
        "no report written");
  const std::vector<Optimum> headline = headline_answers(result.coefficients, options.headline_flops);

  // Bootstrap: resample the training runs with replacement and refit from the chosen fit.
  std::vector<std::optional<Solution>> replicates(options.bootstrap);
  parallel_for(options.bootstrap, threads, "bootstrap", options, [&](std::size_t b) {
    std::seed_seq seed{static_cast<std::uint64_t>(options.seed), static_cast<std::uint64_t>(b)};
    std::mt19937_64 rng(seed);  // one stream per replicate: the result does not depend on threading
    std::uniform_int_distribution<std::size_t> pick(0, training.size() - 1);
    std::vector<std::size_t> resample(training.size());
    for (std::size_t& i : resample) i = training[pick(rng)];
    const LawProblem replicate(make_training_set(runs, resample), options.huber_delta, form);
    Solution s = replicate.solve(best->x, options.max_iterations);
    if (s.converged) replicates[b] = s;
  });
  result.bootstrap_fits = options.bootstrap;
  if (options.bootstrap > 0) {
    std::array<std::vector<double>, kCoefficientCount> coefficient_samples;
    std::vector<std::array<std::vector<double>, 3>> headline_samples(headline.size());
    for (const auto& r : replicates) {
      if (!r) continue;
      ++result.bootstrap_converged;
      const Coefficients k = to_coefficients(r->x, form);
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
    for (const auto& samples : coefficient_samples)
      result.coefficient_intervals.push_back(interval_of(samples));
    for (std::size_t e = 0; e < headline.size(); ++e)
      result.headline.push_back(HeadlineInterval{headline[e], interval_of(headline_samples[e][0]),
                                                 interval_of(headline_samples[e][1]),
                                                 interval_of(headline_samples[e][2])});
  } else {
    for (const Optimum& o : headline) result.headline.push_back(HeadlineInterval{o, {}, {}, {}});
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return result;
}

}  // namespace moesweep::analysis
