// Data parallelism over MPI: the same run on 2 ranks (each taking whole routing groups of every batch,
// gradients all-reduced) must match the single-rank run within float tolerance, and routing stays causal
// on each rank's share. Run under `mpirun -np 2` (ctest label: integration).
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "moesweep/trainer/model.h"
#include "training_fixture.h"

namespace moesweep::trainer {
namespace {

class DataParallel : public TrainingFixture {
 protected:
  // The fixture's batch of 8 sequences as 2 routing groups of 4, one per rank.
  static RunConfig grouped_config() {
    auto c = config();
    c.model.routing_group = 4;
    return c;
  }
};

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

TEST_F(DataParallel, EachRanksShareRoutesAsInTheWholeBatchAndCausally) {
  int ranks = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  if (ranks != 2) GTEST_SKIP() << "needs mpirun -np 2, got " << ranks << " rank(s)";
  auto m = grouped_config().model;
  m.seq_len = 64;
  torch::manual_seed(0);  // the same model and batch on both ranks
  MoeTransformer model(m);
  torch::NoGradGuard no_grad;
  const auto batch = torch::randint(0, 256, {8, m.seq_len}, torch::kLong);
  const auto [begin, end] = data_parallel_slice(m, 8, world_rank(), ranks);
  ASSERT_EQ(end - begin, 4);
  const auto mine = batch.narrow(0, begin, end - begin);
  for (const double cf : {0.5, 1.0, 1.5}) {
    const auto whole = model->forward(batch, cf);
    const auto share = model->forward(mine, cf);
    if (cf <= 1.0) {
      EXPECT_GT(share.dropped.sum().item<std::int64_t>(), 0);
    }
    // The rank's groups are the whole batch's groups, so its tokens route exactly as in one process.
    EXPECT_TRUE(torch::allclose(share.logits, whole.logits.narrow(0, begin, end - begin), 1e-5, 1e-5))
        << "rank " << world_rank() << " cf " << cf;
    // Changing the second half of a sequence leaves its first half's logits identical.
    auto altered = mine.clone();
    altered[1].narrow(0, m.seq_len / 2, m.seq_len / 2).fill_(7);
    const auto after = model->forward(altered, cf);
    EXPECT_TRUE(torch::equal(share.logits[1].narrow(0, 0, m.seq_len / 2),
                             after.logits[1].narrow(0, 0, m.seq_len / 2)))
        << "rank " << world_rank() << " cf " << cf;
  }
}

TEST_F(DataParallel, TwoRanksMatchOneRank) {
  int ranks = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  if (ranks != 2) GTEST_SKIP() << "needs mpirun -np 2, got " << ranks << " rank(s)";

  auto single_options = options();
  single_options.communicator = MPI_COMM_SELF;
  RecordingObserver single_observer;
  const auto single = train(grouped_config(), single_options, single_observer);

  auto parallel_options = options();
  parallel_options.communicator = MPI_COMM_WORLD;
  RecordingObserver parallel_observer;
  const auto parallel = train(grouped_config(), parallel_options, parallel_observer);

  std::printf("eval_loss: 1 rank %.9f, 2 ranks %.9f; train_loss: 1 rank %.9f, 2 ranks %.9f\n",
              single.eval_loss, parallel.eval_loss, single.train_loss, parallel.train_loss);
  ASSERT_EQ(single.outcome, Outcome::completed);
  ASSERT_EQ(parallel.outcome, Outcome::completed);
  EXPECT_EQ(parallel.steps, single.steps);
  EXPECT_EQ(parallel.tokens, single.tokens);
  // Step by step the runs differ only by summation order (the halves' gradients are added, not computed
  // together), so the loss curves agree closely early on; later, rounding may flip a routing decision.
  ASSERT_EQ(parallel_observer.progress.size(), single_observer.progress.size());
  double early_difference = 0.0;
  for (std::size_t step = 0; step < 10; ++step) {
    early_difference = std::max(early_difference, std::abs(parallel_observer.progress[step].train_loss -
                                                           single_observer.progress[step].train_loss));
  }
  std::printf("largest train-loss difference over the first 10 steps: %.3g\n", early_difference);
  EXPECT_LT(early_difference, 1e-4);
  EXPECT_NEAR(parallel.train_loss, single.train_loss, 2e-3);
  EXPECT_NEAR(parallel.eval_loss, single.eval_loss, 2e-3);
  EXPECT_LT(parallel.eval_loss, 2.5);  // it trained

  // Every rank holds the same model, so every rank reports the same eval loss, to the bit.
  double other = 0.0;
  const int rank = world_rank();
  MPI_Sendrecv(&parallel.eval_loss, 1, MPI_DOUBLE, 1 - rank, 0, &other, 1, MPI_DOUBLE, 1 - rank, 0,
               MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  EXPECT_EQ(other, parallel.eval_loss);
}

}  // namespace
}  // namespace moesweep::trainer

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  testing::InitGoogleTest(&argc, argv);
  const int failed = RUN_ALL_TESTS();
  MPI_Finalize();
  return failed;
}
