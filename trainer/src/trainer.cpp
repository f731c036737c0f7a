#include "moesweep/trainer/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <set>
#include <sstream>

#include "blas_threads.h"
#include "checkpoint.h"
#include "moesweep/trainer/file_io.h"
#include "gradient_allreduce.h"
#include "moesweep/input_error.h"
#include "moesweep/trainer/data.h"
#include "moesweep/trainer/model.h"

namespace moesweep::trainer {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The fields that determine the training trajectory, one "key = value" per line. A checkpoint carries
// it and resuming needs an exact match. Data paths, eval settings and the checkpoint interval are left
// out: moving the shards or changing how often to checkpoint must not orphan a run's checkpoints. The
// first line names the recipe (kRecipeLine): checkpoints written before it existed are refused with
// their own message.
std::string trajectory_fingerprint(const RunConfig& c) {
  std::ostringstream out;
  out.precision(17);
  // lr = "auto" names its rule, not the rate it computes: another libm or a fused multiply-add moves the
  // rate's last bit, and a checkpoint must resume on any node of the cluster (as the run key does).
  std::ostringstream lr;
  lr.precision(17);
  if (c.train.lr_auto)
    lr << kAutoLearningRateRule;
  else
    lr << c.train.lr;
  out << kRecipeLine << "\n"
      << "data.tokenizer = " << c.data.tokenizer << "\n"
      << "model.d_model = " << c.model.d_model << "\n"
      << "model.n_layers = " << c.model.n_layers << "\n"
      << "model.n_heads = " << c.model.n_heads << "\n"
      << "model.experts = " << c.model.experts << "\n"
      << "model.seq_len = " << c.model.seq_len << "\n"
      << "model.vocab_size = " << c.model.vocab_size << "\n"
      << "model.capacity_factor = " << c.model.capacity_factor << "\n"
      << "model.routing_group = " << c.model.routing_group << "\n"
      << "model.capacity_rounding = " << c.model.capacity_rounding << "\n"
      << "model.final_norm = " << c.model.final_norm << "\n"
      << "model.init_truncation = " << c.model.init_truncation << "\n"
      << "model.embedding_init_fan_in = " << c.model.embedding_init_fan_in << "\n"
      << "model.expert_down_fan_in = " << c.model.expert_down_fan_in << "\n"
      << "train.tokens = " << c.train.tokens << "\n"
      << "train.batch_tokens = " << c.train.batch_tokens << "\n"
      << "train.batch_ramp = " << c.train.batch_ramp << "\n"
      << "train.lr = " << lr.str() << "\n"
      << "train.warmup_tokens = " << c.train.warmup_tokens << "\n"
      << "train.decay_fraction = " << c.train.decay_fraction << "\n"
      << "train.weight_decay = " << c.train.weight_decay << "\n"
      << "train.grad_clip = " << c.train.grad_clip << "\n"
      << "train.seed = " << c.train.seed << "\n"
      << "train.z_loss_weight = " << c.train.z_loss_weight << "\n"
      << "train.balance_loss_weight = " << c.train.balance_loss_weight << "\n"
      << "train.adam_beta1 = " << c.train.adam_beta1 << "\n"
      << "train.adam_beta2 = " << c.train.adam_beta2 << "\n"
      << "train.adam_eps = " << c.train.adam_eps << "\n"
      << "train.weight_decay_scope = " << c.train.weight_decay_scope << "\n";
  return out.str();
}

void require(bool ok, const std::string& key, const std::string& what) {
  if (!ok) throw InputError(key + ": " + what);
}

// [sequences, T + 1] int64 windows at the given places (inputs are [:, :T], targets [:, 1:]).
torch::Tensor windows(const ShardSet& shards, const std::vector<ShardSet::Window>& places,
                      std::int64_t seq_len) {
  auto batch = torch::empty({static_cast<std::int64_t>(places.size()), seq_len + 1}, torch::kLong);
  auto* out = batch.data_ptr<std::int64_t>();
  for (const auto& place : places) {
    const auto& shard = shards.shard(place.shard);
    for (std::int64_t i = 0; i <= seq_len; ++i)
      *out++ = shard.token(place.offset + static_cast<std::size_t>(i));
  }
  return batch;
}

// Rank `rank`'s share [begin, end) of `count` items split as evenly as possible over `ranks`.
std::pair<std::int64_t, std::int64_t> slice_of(std::int64_t count, int rank, int ranks) {
  return {count * rank / ranks, count * (rank + 1) / ranks};
}

// `windows_needed` windows of `window` tokens: any window start for train, contiguous windows for val.
void check_shards(const ShardSet& shards, const std::string& key, const RunConfig& config, std::size_t window,
                  std::size_t windows_needed, bool contiguous) {
  const auto& path = shards.spec();
  if (shards.tokenizer() != tokenizer_family(config.data.tokenizer) ||
      shards.vocab_size() != config.model.vocab_size) {
    throw InputError(path + ": shard was written with the " + shards.tokenizer() + " tokenizer (vocabulary " +
                     std::to_string(shards.vocab_size()) + "), but the run uses " + config.data.tokenizer + " (vocabulary " +
                     std::to_string(config.model.vocab_size) + ")");
  }
  const std::size_t available =
      contiguous ? shards.contiguous_windows(window - 1, window) : shards.window_starts(window);
  if (available >= windows_needed) return;
  const std::size_t min_tokens = contiguous ? windows_needed * (window - 1) + 1 : window;
  if (shards.shard_count() == 1) {
    throw InputError(path + ": " + key + " shard has " + std::to_string(shards.size()) +
                     " tokens; the run needs at least " + std::to_string(min_tokens));
  }
  throw InputError(path + ": " + key + " shards (" + std::to_string(shards.shard_count()) + ", " +
                   std::to_string(shards.size()) + " tokens) hold " + std::to_string(available) + " " +
                   (contiguous ? "eval" : "training") + " windows of " + std::to_string(window) +
                   " tokens within a shard; the run needs " + std::to_string(windows_needed));
}

class Trainer {
 public:
  Trainer(const RunConfig& config, const TrainOptions& options, TrainingObserver& observer)
      : config_(config),
        options_(options),
        observer_(observer),
        reduce_(options.communicator),
        device_(options.device),
        eval_sequences_(std::max<std::int64_t>(1, config.train.eval_tokens / config.model.seq_len)),
        train_shard_(config.data.train, "train"),
        val_shard_(config.data.val, "val"),
        model_(nullptr) {
    const auto window = static_cast<std::size_t>(config.model.seq_len + 1);
    check_shards(train_shard_, "train", config, window, 1, false);
    check_shards(val_shard_, "val", config, window, static_cast<std::size_t>(eval_sequences_), true);
    // The BLAS pool follows the intra-op thread count whatever OPENBLAS_NUM_THREADS says: the same run
    // then gives the same bits on any machine of the same CPU kernel family.
    if (options.threads > 0) torch::set_num_threads(options.threads);
    set_blas_threads(torch::get_num_threads());
    torch::manual_seed(config.train.seed);
    model_ = MoeTransformer(config.model, device_.is_cuda() ? torch::kBFloat16 : torch::kFloat);
    model_->to(device_);
    optimizer_ = make_optimizer(*model_, config.train);
    // Ranks take whole routing groups, so the smallest batch must hold a group for every rank.
    const auto ranks_problem = data_parallel_problem(config, reduce_.size());
    require(ranks_problem.empty(), "model.routing_group", ranks_problem);
    const auto last = step_boundary_at_or_after(config, config.train.tokens).tokens;
    for (const auto tokens : options.keep_checkpoints_at_tokens) {
      require(!options.keep_dir.empty(), "keep_dir", "kept checkpoints need a directory");
      require(tokens > 0 && tokens <= last && step_boundary_at_or_before(config, tokens).tokens == tokens,
              "keep_checkpoints_at_tokens",
              std::to_string(tokens) + " is not a step boundary of this run (batch " +
                  std::to_string(config.train.batch_tokens) + " tokens, up to " + std::to_string(last) + ")");
      keep_.insert(tokens);
    }
  }

  Result run() {
    const auto started = Clock::now();
    Result result;
    result.n_act = active_params(config_.model);
    result.n_total = total_params(config_.model);
    CheckpointPosition position;
    bool resumed = false;
    if (options_.resume) {
      require(!options_.checkpoint_dir.empty(), "--resume", "needs a checkpoint directory");
      const auto loaded =
          load_latest_checkpoint(options_.checkpoint_dir, trajectory_fingerprint(config_), *model_,
                                 *optimizer_, [this](const std::string& m) { observer_.on_warning(m); });
      if (loaded) position = loaded->position, resumed = true;
    }
    if (!resumed && !options_.start_from.empty()) position = start_from_checkpoint();
    result.resumed_from_step = position.step;

    const auto training_started = Clock::now();
    const std::int64_t tokens_at_start = position.tokens;
    bool stop = false;
    while (position.tokens < config_.train.tokens && !stop) {
      const auto sequences = batch_sequences_at(config_, position.tokens);
      const auto batch_tokens = sequences * config_.model.seq_len;
      const double lr = learning_rate_at(config_.train, position.tokens, batch_tokens);
      for (auto& group : optimizer_->param_groups())
        static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);

      const auto step = train_step(position.step, sequences, observer_.stop_requested());
      position.step += 1;
      position.tokens += batch_tokens;
      result.train_loss = step.lm_loss;
      if (!std::isfinite(step.total_loss)) {
        result.outcome = Outcome::diverged;
        char detail[128];
        std::snprintf(detail, sizeof detail, " at step %lld (%lld tokens, lr %.3g)",
                      static_cast<long long>(position.step), static_cast<long long>(position.tokens), lr);
        result.message =
            "loss became " + std::string(std::isnan(step.total_loss) ? "NaN" : "infinite") + detail;
        break;
      }
      stop = step.stop && position.tokens < config_.train.tokens;  // a stop on the last step just finishes

      const double elapsed = seconds_since(training_started);
      const double rate = static_cast<double>(position.tokens - tokens_at_start) / std::max(elapsed, 1e-9);
      observer_.on_progress(
          {position.step, position.tokens, step.lm_loss, lr, rate,
           static_cast<double>(std::max<std::int64_t>(0, config_.train.tokens - position.tokens)) /
               std::max(rate, 1e-9)});
      const auto every = config_.train.checkpoint_every_tokens;
      const bool interval =
          every > 0 && (position.tokens / every) > ((position.tokens - batch_tokens) / every);
      if (!options_.checkpoint_dir.empty() && (interval || stop))
        checkpoint(position, options_.checkpoint_dir, 2);
      if (keep_.count(position.tokens)) checkpoint(position, options_.keep_dir, 0);
    }
    result.steps = position.step;
    result.tokens = position.tokens;
    const double training_seconds = seconds_since(training_started);
    result.tokens_per_s =
        static_cast<double>(position.tokens - tokens_at_start) / std::max(training_seconds, 1e-9);
    if (result.outcome != Outcome::diverged) {
      result.outcome = stop ? Outcome::stopped : Outcome::completed;
      result.eval_loss = stop ? std::nan("") : evaluate();
    } else {
      result.eval_loss = std::nan("");
    }
    result.seconds = seconds_since(started);
    return result;
  }

 private:
  struct ReducedLosses {
    double lm_loss;     // global-batch mean cross-entropy
    double total_loss;  // with the auxiliary losses
    bool stop;          // some rank was asked to stop
  };

  // One optimizer step on this rank's slice of the global batch: whole routing groups, so the routing
  // and the auxiliary losses are the same on any number of ranks. Each rank scales its losses by its
  // share of the sequences, so summing gradients over ranks gives the global-batch gradient. The
  // reported losses and the stop flag ride along in the same all-reduce.
  ReducedLosses train_step(std::int64_t step, std::int64_t sequences, bool stop_requested) {
    const auto T = config_.model.seq_len;
    const auto [begin, end] = data_parallel_slice(config_.model, sequences, reduce_.rank(), reduce_.size());
    std::vector<ShardSet::Window> places;
    for (auto sequence = begin; sequence < end; ++sequence) {
      places.push_back(
          train_shard_.training_window(config_.train.seed, step, sequence, static_cast<std::size_t>(T + 1)));
    }
    const auto batch = windows(train_shard_, places, T).to(device_);
    const double share = static_cast<double>(end - begin) / static_cast<double>(sequences);

    optimizer_->zero_grad();
    const auto out = model_->forward(batch.narrow(1, 0, T), config_.model.capacity_factor);
    const auto [lm_loss, total_loss] = training_losses(out, batch, config_.train);
    (total_loss * share).backward();
    const auto parameters = model_->parameters();
    const ReducedLosses losses =
        reduce_.size() == 1
            ? ReducedLosses{lm_loss.item<double>(), total_loss.item<double>(), stop_requested}
            : sum_over_ranks(parameters, lm_loss.detach() * share, total_loss.detach() * share, stop_requested);
    if (!std::isfinite(losses.total_loss)) return losses;  // never apply a non-finite update

    torch::nn::utils::clip_grad_norm_(parameters, config_.train.grad_clip);
    optimizer_->step();
    return losses;
  }

  // Sums the gradients and the step's losses and stop flag over the ranks in one all-reduce. A single
  // rank skips this: packing every gradient into one buffer and back costs a few percent of a step.
  ReducedLosses sum_over_ranks(const std::vector<torch::Tensor>& parameters, const torch::Tensor& lm_loss,
                            const torch::Tensor& total_loss, bool stop_requested) {
    std::vector<torch::Tensor> pieces;
    for (const auto& parameter : parameters) pieces.push_back(parameter.grad().to(torch::kFloat).reshape(-1));
    pieces.push_back(
        torch::stack({lm_loss, total_loss, torch::full({}, stop_requested ? 1.0 : 0.0, lm_loss.options())})
            .to(torch::kFloat));
    auto flat = torch::cat(pieces);
    reduce_.sum(flat);
    std::int64_t offset = 0;
    for (const auto& parameter : parameters) {
      auto grad = parameter.mutable_grad();
      grad.copy_(flat.narrow(0, offset, grad.numel()).view_as(grad));
      offset += grad.numel();
    }
    const auto scalars = flat.narrow(0, offset, 3).to(torch::kCPU);
    return {scalars[0].item<double>(), scalars[1].item<double>(), scalars[2].item<double>() > 0.0};
  }

  void checkpoint(const CheckpointPosition& position, const std::filesystem::path& dir, std::size_t keep) {
    std::filesystem::path path;
    std::string superseded;
    if (reduce_.rank() == 0) {
      try {
        path = save_checkpoint(dir, position, trajectory_fingerprint(config_), *model_, *optimizer_, keep,
                               options_.may_write_checkpoints);
      } catch (const Superseded& e) {
        superseded = e.what();
      }
    }
    // Every rank stops together when rank 0 was fenced (a lone throw would hang the others here).
    if (reduce_.sum(superseded.empty() ? 0.0 : 1.0) > 0)
      throw Superseded(superseded.empty() ? dir.string() + ": a newer attempt owns this run" : superseded);
    reduce_.barrier();  // a rank that resumes right after a stop must find the file complete
    if (reduce_.rank() == 0) observer_.on_checkpoint(position.step, position.tokens, path);
  }

  // Mean cross-entropy over the first eval_tokens of val (contiguous windows, shard after shard, none
  // straddling two shards), with the eval capacity factor, one forward call per routing group of the
  // training's last batch (eval_routing_group; the authors' eval ran chunks of 64 sequences), the last
  // group possibly shorter. Ranks split the groups; the groups and the summation order are fixed, so the
  // figure is reproducible to the bit on CPU for a given rank count.
  double evaluate() {
    torch::NoGradGuard no_grad;
    const auto T = config_.model.seq_len;
    const auto group = eval_routing_group(config_);
    const auto groups = (eval_sequences_ + group - 1) / group;
    const auto [first_group, end_group] = slice_of(groups, reduce_.rank(), reduce_.size());
    double loss_sum = 0.0;
    for (auto g = first_group; g < end_group; ++g) {
      std::vector<ShardSet::Window> places;
      for (auto sequence = g * group; sequence < std::min(eval_sequences_, (g + 1) * group); ++sequence) {
        places.push_back(val_shard_.contiguous_window(static_cast<std::size_t>(sequence),
                                                      static_cast<std::size_t>(T),
                                                      static_cast<std::size_t>(T + 1)));
      }
      const auto batch = windows(val_shard_, places, T).to(device_);
      const auto out = model_->forward(batch.narrow(1, 0, T), config_.model.eval_capacity_factor);
      loss_sum += torch::nn::functional::cross_entropy(
                      out.logits.reshape({-1, config_.model.vocab_size}), batch.narrow(1, 1, T).reshape(-1),
                      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                      .to(torch::kDouble)
                      .item<double>();
    }
    return reduce_.sum(loss_sum) / static_cast<double>(eval_sequences_ * T);
  }

  // A cooldown branch's first position: its trunk's checkpoint at the branch point, after checking that
  // the trunk's schedule and this run's agree on every step before it.
  CheckpointPosition start_from_checkpoint() {
    const auto path = options_.start_from.string();
    require(options_.start_from_config.has_value(), path, "no config given for the checkpoint to start from");
    const RunConfig& origin = *options_.start_from_config;
    RunConfig aligned = origin;
    aligned.train.tokens = config_.train.tokens;
    aligned.train.decay_fraction = config_.train.decay_fraction;
    require(trajectory_fingerprint(aligned) == trajectory_fingerprint(config_), path,
            "the run that wrote this checkpoint differs from this one in more than train.tokens and "
            "train.decay_fraction");
    const auto loaded =
        load_checkpoint_file(options_.start_from, trajectory_fingerprint(origin), *model_, *optimizer_);
    const auto tokens = loaded.position.tokens;
    require(tokens <= config_.train.tokens && decay_factor_at(config_.train, tokens) == 1.0 &&
                decay_factor_at(origin.train, tokens) == 1.0,
            path,
            "the checkpoint at " + std::to_string(tokens) +
                " tokens lies past the start of this run's (or its writer's) learning-rate decay");
    return loaded.position;
  }

  const RunConfig& config_;
  const TrainOptions& options_;
  TrainingObserver& observer_;
  GradientAllReduce reduce_;
  torch::Device device_;
  std::int64_t eval_sequences_;
  ShardSet train_shard_, val_shard_;
  MoeTransformer model_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  std::set<std::int64_t> keep_;  // token counts at which a kept checkpoint is written
};

}  // namespace

const char* to_string(Outcome outcome) {
  switch (outcome) {
    case Outcome::completed:
      return "completed";
    case Outcome::stopped:
      return "stopped";
    case Outcome::diverged:
      return "diverged";
  }
  return "unknown";
}

void validate(const RunConfig& c) {
  const auto& m = c.model;
  const auto& t = c.train;
  require(m.d_model > 0 && m.n_layers > 0 && m.n_heads > 0, "model",
          "d_model, n_layers and n_heads must be positive");
  require(m.d_model % m.n_heads == 0 && (m.d_model / m.n_heads) % 2 == 0, "model.n_heads",
          "d_model (" + std::to_string(m.d_model) + ") must split into n_heads heads of even size (RoPE)");
  require(m.experts >= 1, "model.experts", "must be at least 1");
  require(m.seq_len >= 1, "model.seq_len", "must be positive");
  require(vocab_size_of(c.data.tokenizer) > 0, "data.tokenizer",
          "unknown tokenizer '" + c.data.tokenizer + "'");
  require(m.vocab_size == vocab_size_of(c.data.tokenizer), "model.vocab_size",
          std::to_string(m.vocab_size) + " does not match the " + c.data.tokenizer + " tokenizer (" +
              std::to_string(vocab_size_of(c.data.tokenizer)) + ")");
  require(m.capacity_factor > 0 && m.eval_capacity_factor > 0, "model.capacity_factor", "must be positive");
  require(m.routing_group >= 1, "model.routing_group", "must be at least 1 sequence");
  require(m.capacity_rounding == "floor" || m.capacity_rounding == "ceil", "model.capacity_rounding",
          "must be \"floor\" or \"ceil\", got \"" + m.capacity_rounding + "\"");
  require(m.init_truncation > 0, "model.init_truncation", "must be positive");
  require(m.embedding_init_fan_in >= 1, "model.embedding_init_fan_in", "must be at least 1");
  require(m.expert_down_fan_in == "all_experts" || m.expert_down_fan_in == "one_expert",
          "model.expert_down_fan_in",
          "must be \"all_experts\" or \"one_expert\", got \"" + m.expert_down_fan_in + "\"");
  require(t.adam_beta1 >= 0 && t.adam_beta1 < 1 && t.adam_beta2 >= 0 && t.adam_beta2 < 1, "train.adam_beta2",
          "AdamW betas must be in [0, 1)");
  require(t.adam_eps > 0, "train.adam_eps", "must be positive");
  require(t.weight_decay_scope == "all" || t.weight_decay_scope == "matrices", "train.weight_decay_scope",
          "must be \"all\" or \"matrices\", got \"" + t.weight_decay_scope + "\"");
  require(t.tokens > 0, "train.tokens", "must be positive");
  require(t.batch_tokens > 0 && t.batch_tokens % m.seq_len == 0, "train.batch_tokens",
          "must be a positive multiple of seq_len (" + std::to_string(m.seq_len) + ")");
  const auto groups = routing_group_problem(c);
  require(groups.empty(), "model.routing_group", groups);
  require(std::isfinite(t.lr) && t.lr > 0, "train.lr", "must be a positive number");
  require(t.warmup_tokens >= 0, "train.warmup_tokens", "must not be negative");
  require(t.decay_fraction >= 0 && t.decay_fraction <= 1, "train.decay_fraction", "must be in [0, 1]");
  require(t.weight_decay >= 0, "train.weight_decay", "must not be negative");
  require(t.grad_clip > 0, "train.grad_clip", "must be positive");
  require(t.eval_tokens >= m.seq_len, "train.eval_tokens", "must be at least seq_len");
  require(t.checkpoint_every_tokens >= 0, "train.checkpoint_every_tokens", "must not be negative");
}

std::pair<std::int64_t, std::int64_t> data_parallel_slice(const ModelConfig& model, std::int64_t sequences,
                                                          int rank, int ranks) {
  const auto group = routing_group_size(model, sequences);
  const auto [first_group, end_group] = slice_of(sequences / group, rank, ranks);
  return {first_group * group, end_group * group};
}

Result train(const RunConfig& config, const TrainOptions& options, TrainingObserver& observer) {
  validate(config);
  Trainer trainer(config, options, observer);
  return trainer.run();
}

}  // namespace moesweep::trainer
