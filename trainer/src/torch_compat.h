#pragma once
// The one place for differences between Debian's LibTorch 1.13 (CPU) and the CUDA LibTorch 2.x used on
// GPU hosts. Everything else in the trainer uses APIs common to both.
#include <torch/torch.h>
#include <torch/version.h>

#include <cmath>

namespace moesweep::trainer::compat {

// Causal softmax attention in the dtype of q, k, v ([B, H, T, head_dim]). 2.x has a fused kernel
// (flash / memory-efficient on CUDA); 1.13 lacks it, so spell it out.
inline torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                                      const torch::Tensor& v) {
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0, /*is_causal=*/true);
#else
  const auto length = q.size(-2);
  const auto scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(q.size(-1)));
  const auto future =
      torch::ones({length, length}, torch::TensorOptions().dtype(torch::kBool).device(q.device())).triu(1);
  return torch::matmul(
      torch::softmax(scores.masked_fill(future, -std::numeric_limits<float>::infinity()), -1), v);
#endif
}

}  // namespace moesweep::trainer::compat
