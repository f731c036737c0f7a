// Writes the native trainer's side of the parity test (tests/reference/parity.py): a small MoE with
// capacity drops in routing groups of several sequences, its initial weights, three AdamW steps on fixed
// batches (logits, losses and every gradient of step 1, the parameters after step 3), and one eval at
// capacity factor 1.5. Each step is the trainer's own: the model, training_losses, make_optimizer, the
// gradient-norm clip.
//
//   moesweep_parity_export OUT_DIR    → OUT_DIR/parity.tensors
//
// File format: "MOETENS1", u64 little-endian header length, a JSON header {"meta": {...}, "tensors":
// [{"name", "dtype" (float32 | int64), "shape", "offset"}]}, then the raw tensors (offset from the
// start of the data section).
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "moesweep/trainer/model.h"

namespace {

using namespace moesweep::trainer;

class TensorFile {
 public:
  void add(const std::string& name, const torch::Tensor& tensor) {
    const auto t = tensor.detach().to(torch::kCPU).contiguous();
    TORCH_CHECK(t.scalar_type() == torch::kFloat || t.scalar_type() == torch::kLong, name, ": unsupported dtype");
    tensors_.push_back({{"name", name},
                        {"dtype", t.scalar_type() == torch::kFloat ? "float32" : "int64"},
                        {"shape", t.sizes().vec()},
                        {"offset", data_.size()}});
    const auto* bytes = static_cast<const char*>(t.data_ptr());
    data_.insert(data_.end(), bytes, bytes + t.numel() * static_cast<std::int64_t>(t.element_size()));
  }
  void write(const std::filesystem::path& path, const nlohmann::json& meta) const {
    const std::string header = nlohmann::json{{"meta", meta}, {"tensors", tensors_}}.dump();
    std::ofstream out(path, std::ios::binary);
    const std::uint64_t length = header.size();
    out.write("MOETENS1", 8);
    out.write(reinterpret_cast<const char*>(&length), sizeof length);  // x86-64 and Arm: little-endian
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    out.write(data_.data(), static_cast<std::streamsize>(data_.size()));
    if (!out) throw std::runtime_error("cannot write " + path.string());
  }

 private:
  nlohmann::json tensors_ = nlohmann::json::array();
  std::vector<char> data_;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: moesweep_parity_export OUT_DIR\n");
    return 2;
  }
  const std::filesystem::path out_dir = argv[1];
  std::filesystem::create_directories(out_dir);
  torch::set_num_threads(1);
  torch::manual_seed(0);

  RunConfig c;
  c.model.d_model = 32;
  c.model.n_layers = 2;
  c.model.n_heads = 4;
  c.model.experts = 4;
  c.model.seq_len = 32;
  c.model.vocab_size = 256;
  c.model.routing_group = 4;  // a batch of 8 sequences is 2 routing groups
  c.train.lr = 1e-2;
  const std::vector<double> lrs = {1e-2, 1e-2, 5e-3};
  const std::int64_t B = 8, T = c.model.seq_len, eval_sequences = 10;  // eval groups of 4, 4 and 2

  MoeTransformer model(c.model);
  auto optimizer = make_optimizer(*model, c.train);
  TensorFile file;
  for (const auto& item : model->named_parameters()) file.add("param/" + item.key(), item.value());

  // Tokens from a small alphabet, so that routing is uneven and capacity drops happen.
  for (std::size_t step = 1; step <= lrs.size(); ++step) {
    const auto batch = torch::randint(0, 48, {B, T + 1}, torch::kLong);
    file.add("batch/" + std::to_string(step), batch);
    for (auto& group : optimizer->param_groups())
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lrs[step - 1]);
    optimizer->zero_grad();
    const auto out = model->forward(batch.narrow(1, 0, T), c.model.capacity_factor);
    const auto losses = training_losses(out, batch, c.train);
    losses.total.backward();
    if (step == 1) {
      file.add("step1/logits", out.logits);
      file.add("step1/lm_loss", losses.lm);
      file.add("step1/z_loss", out.z_loss);
      file.add("step1/balance_loss", out.balance_loss);
      file.add("step1/dropped", out.dropped);
      for (const auto& item : model->named_parameters()) file.add("step1/grad/" + item.key(), item.value().grad());
    }
    torch::nn::utils::clip_grad_norm_(model->parameters(), c.train.grad_clip);
    optimizer->step();
  }
  for (const auto& item : model->named_parameters()) file.add("step3/param/" + item.key(), item.value());

  // Eval as the trainer runs it: one forward call per routing group of the last training batch's size
  // (eval_routing_group), the last one shorter.
  torch::NoGradGuard no_grad;
  const auto eval_batch = torch::randint(0, 48, {eval_sequences, T + 1}, torch::kLong);
  const auto group = eval_routing_group(c);
  std::vector<torch::Tensor> logits;
  double loss_sum = 0.0;
  for (std::int64_t first = 0; first < eval_sequences; first += group) {
    const auto chunk = eval_batch.narrow(0, first, std::min(group, eval_sequences - first));
    const auto out = model->forward(chunk.narrow(1, 0, T), c.model.eval_capacity_factor);
    logits.push_back(out.logits);
    loss_sum += torch::nn::functional::cross_entropy(
                    out.logits.reshape({-1, c.model.vocab_size}), chunk.narrow(1, 1, T).reshape(-1),
                    torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .item<double>();
  }
  file.add("eval/batch", eval_batch);
  file.add("eval/logits", torch::cat(logits));
  file.add("eval/loss", torch::tensor(static_cast<float>(loss_sum / static_cast<double>(eval_sequences * T))));

  const nlohmann::json meta = {{"d_model", c.model.d_model},
                               {"n_layers", c.model.n_layers},
                               {"n_heads", c.model.n_heads},
                               {"experts", c.model.experts},
                               {"seq_len", c.model.seq_len},
                               {"vocab_size", c.model.vocab_size},
                               {"routing_group", c.model.routing_group},
                               {"capacity_factor", c.model.capacity_factor},
                               {"eval_capacity_factor", c.model.eval_capacity_factor},
                               {"final_norm", c.model.final_norm},
                               {"layer_norm_eps", 1e-5},
                               {"z_loss_weight", c.train.z_loss_weight},
                               {"balance_loss_weight", c.train.balance_loss_weight},
                               {"adam_beta1", c.train.adam_beta1},
                               {"adam_beta2", c.train.adam_beta2},
                               {"adam_eps", c.train.adam_eps},
                               {"weight_decay", c.train.weight_decay},
                               {"weight_decay_scope", c.train.weight_decay_scope},
                               {"grad_clip", c.train.grad_clip},
                               {"lrs", lrs},
                               {"steps", lrs.size()}};
  file.write(out_dir / "parity.tensors", meta);
  std::printf("wrote %s\n", (out_dir / "parity.tensors").c_str());
  return 0;
}
