// Data-parallel training under mpirun (src/dist, the trainer's distributed loop), end to end with
// the scalebert binary on the tiny classifier fixture and 64 tweets of examples/data:
//  - two ranks with accumulation 1 take exactly the steps of one process with accumulation 2 (the
//    same micro-batches in the same steps, the same dropout keys; only the order of float sums in
//    the gradient all-reduce differs): per-step losses and gradient norms, evaluation metrics and
//    every parameter of the last checkpoint agree to float rounding;
//  - rank 0 alone writes the logs and checkpoints; the word embeddings' gradient is summed by its
//    used rows only (dist/gradient_all_reduce.h), with the same result;
//  - a checkpoint of two ranks resumes in one process and ends where the one-process run ends;
//  - the distributed optimizer (sharded state) takes the same steps, with AdamW and LAMB, and its
//    checkpoints resume on two ranks and in one process;
//  - SIGTERM to mpirun stops every rank at the same step, rank 0 saves, one process resumes;
//  - an error on one rank ends the whole job (MPI_Abort) instead of a hang; ranks started with
//    different settings stop before the first step.
// Skips, saying why, where mpirun or the fixtures are absent or the build has no MPI.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "dist/communicator.h"
#include "io/safetensors.h"
#include "testing.h"

namespace scalebert {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using testing::fixture_path;

fs::path binary() { return fs::path(SCALEBERT_BINARY_DIR) / "scalebert"; }

int run_command(const std::string& command) {
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool mpirun_available() { return run_command("command -v mpirun > /dev/null 2>&1") == 0; }

// "mpirun ... -np <ranks> " as the tests launch it: as root too, more ranks than cores allowed, and
// without vader's single-copy mechanism, which needs ptrace rights that containers often withhold.
std::string mpirun_prefix(int ranks) {
  return "mpirun --allow-run-as-root --oversubscribe --mca btl_vader_single_copy_mechanism none -np " +
         std::to_string(ranks) + " ";
}

// `command` through /bin/sh in the background, in a process group of its own, so that a job that
// hangs can be killed whole.
pid_t launch(const std::string& command) {
  const pid_t child = fork();
  if (child == 0) {
    setpgid(0, 0);
    execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    std::_Exit(127);
  }
  return child;
}

// Waits until `path` holds `count` complete lines or `seconds` pass; returns the lines counted.
size_t wait_for_lines(const fs::path& path, size_t count, int seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  size_t lines = 0;
  while (lines < count && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (!fs::exists(path)) continue;
    std::ifstream in(path);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    lines = static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
  }
  return lines;
}

// The wait status of `pid` once it exits within `seconds`; otherwise kills its process group and
// returns nothing.
std::optional<int> wait_for_exit(pid_t pid, int seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid, &status, WNOHANG) == pid) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(-pid, SIGKILL);
  waitpid(pid, &status, 0);
  return std::nullopt;
}

std::vector<Json> read_lines(const fs::path& path) {
  std::ifstream in(path);
  std::vector<Json> lines;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) lines.push_back(Json::parse(line));
  }
  return lines;
}

class DistributedTraining : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!dist::mpi_available()) GTEST_SKIP() << "this build has no MPI (libopenmpi-dev was not found by CMake)";
    if (!mpirun_available()) GTEST_SKIP() << "mpirun is not on PATH (apt-get install openmpi-bin)";
    if (!fs::exists(binary())) GTEST_SKIP() << binary() << " is not built";
    SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls"));
    // The first 64 tweets of the repository's sample, and the next 24 for evaluation.
    std::ifstream sample(fs::path(SCALEBERT_SOURCE_DIR) / "examples/data/financial_tweets_train_sample.csv");
    std::string header, line;
    ASSERT_TRUE(std::getline(sample, header));
    std::ofstream train(dir_ / "train.csv"), eval(dir_ / "eval.csv");
    train << header << "\n";
    eval << header << "\n";
    for (int row = 0; row < 88 && std::getline(sample, line); ++row) (row < 64 ? train : eval) << line << "\n";
  }

  // `scalebert train` on the tweets into dir_/<output>, under `mpirun -np ranks` when ranks > 0.
  int train(const std::string& output, int ranks, int accumulation, const std::string& extra = "") {
    std::string command = ranks > 0 ? mpirun_prefix(ranks) : "";
    command += binary().string() + " train --quiet --model " + fixture_path("tiny-bert-cls").string() +
               " --task classification --labels Bearish,Bullish,Neutral --text-column text --label-column sentiment" +
               " --train-file " + (dir_ / "train.csv").string() + " --eval-file " + (dir_ / "eval.csv").string() +
               " --max-length 40 --batch-size 4 --learning-rate 1e-3 --max-grad-norm 1.0 --epochs 2 --seed 7" +
               " --threads 1 --eval-steps 4 --gradient-accumulation-steps " + std::to_string(accumulation) +
               " --output-dir " + (dir_ / output).string() + " " + extra + " > " + (dir_ / (output + ".log")).string() +
               " 2>&1";
    return run_command(command);
  }

  std::string log(const std::string& output) const {
    std::ifstream in(dir_ / (output + ".log"));
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  // Every parameter of two checkpoints: max |a - b| over max |a|, per tensor.
  static void expect_same_parameters(const fs::path& a, const fs::path& b, double tolerance) {
    const SafetensorsFile first = SafetensorsFile::open(a / "model.safetensors");
    const SafetensorsFile second = SafetensorsFile::open(b / "model.safetensors");
    ASSERT_EQ(first.sorted_names(), second.sorted_names());
    for (const std::string& name : first.sorted_names()) {
      // Attention key biases have an exact gradient of 0 (softmax ignores a constant added to a
      // whole row of scores): float noise is all they get, which Adam scales to full-size steps,
      // so they follow the order of the sums and are left out.
      if (name.find("attention.self.key.bias") != std::string::npos) continue;
      const Tensor x = first.tensor(name), y = second.tensor(name);
      ASSERT_EQ(x.numel(), y.numel()) << name;
      if (x.dtype() != DType::kF32) continue;
      double largest = 0, difference = 0;
      for (int64_t i = 0; i < x.numel(); ++i) {
        largest = std::max(largest, static_cast<double>(std::fabs(x.data<float>()[i])));
        difference = std::max(difference, static_cast<double>(std::fabs(x.data<float>()[i] - y.data<float>()[i])));
      }
      EXPECT_LE(difference, tolerance * std::max(largest, 1e-12)) << name;
    }
  }

  const testing::TempDir dir_;
};

// Float sums in another order: the runs agree to ~1e-7 relative (measured); a rank that took the
// wrong micro-batches, a missing all-reduce or a wrong loss scale differs by 1e-2 or more.
constexpr double kTolerance = 2e-5;

TEST_F(DistributedTraining, TwoRanksTakeTheStepsOfOneProcessWithTwiceTheAccumulation) {
  ASSERT_EQ(train("single", 0, 2), 0) << log("single");
  ASSERT_EQ(train("two", 2, 1), 0) << log("two");
  const std::string output = log("two");
  EXPECT_EQ(output.find("steps: 16/16"), output.rfind("steps: 16/16")) << "rank 0 alone prints the summary\n" << output;
  EXPECT_NE(output.find("steps: 16/16"), std::string::npos) << output;

  const std::vector<Json> single = read_lines(dir_ / "single" / "metrics.jsonl");
  const std::vector<Json> two = read_lines(dir_ / "two" / "metrics.jsonl");
  ASSERT_EQ(single.size(), two.size()) << "one rank logs; the other writes nothing";
  ASSERT_GE(single.size(), 4u);
  for (size_t i = 0; i < single.size(); ++i) {
    SCOPED_TRACE(single[i].dump());
    ASSERT_EQ(single[i]["type"], two[i]["type"]);
    ASSERT_EQ(single[i]["step"], two[i]["step"]);
    for (const char* field : {"loss", "grad_norm", "learning_rate", "accuracy", "macro_f1"}) {
      if (!single[i].contains(field)) continue;
      const double a = single[i][field].get<double>(), b = two[i][field].get<double>();
      EXPECT_NEAR(a, b, kTolerance * std::max(1.0, std::fabs(a))) << field;
    }
    if (single[i].contains("tokens_seen")) {
      EXPECT_EQ(single[i]["tokens_seen"], two[i]["tokens_seen"]);
    }
  }
  expect_same_parameters(dir_ / "single" / "checkpoint-last", dir_ / "two" / "checkpoint-last", kTolerance);

  // The word embeddings' gradient went into the sums by its used rows only: each log line's
  // all_reduce_mb lies between the other parameters' share and the whole arena's, per step.
  const SafetensorsFile saved = SafetensorsFile::open(dir_ / "two" / "checkpoint-last" / "model.safetensors");
  int64_t total = 0, word = 0;
  for (const std::string& name : saved.sorted_names()) {
    total += saved.tensor(name).numel();
    if (name.find("word_embeddings") != std::string::npos) word = saved.tensor(name).numel();
  }
  ASSERT_GT(word, 0);
  int64_t previous_step = 0;
  for (const Json& line : two) {
    if (line["type"] != "train") continue;
    const auto steps = static_cast<double>(line["step"].get<int64_t>() - previous_step);
    previous_step = line["step"].get<int64_t>();
    EXPECT_EQ(line["ranks"], 2);
    const double megabytes = line["all_reduce_mb"].get<double>();
    EXPECT_LT(megabytes, steps * static_cast<double>(total) * 4e-6) << line.dump();
    EXPECT_GE(megabytes, steps * static_cast<double>(total - word) * 4e-6) << line.dump();
  }
}

TEST_F(DistributedTraining, ACheckpointOfTwoRanksResumesInOneProcess) {
  ASSERT_EQ(train("single", 0, 2), 0) << log("single");
  ASSERT_EQ(train("resumed", 2, 1, "--stop-after-steps 6"), 0) << log("resumed");
  ASSERT_EQ(train("resumed", 0, 2, "--resume auto"), 0) << log("resumed");
  EXPECT_NE(log("resumed").find("steps: 16/16 (resumed at 6)"), std::string::npos) << log("resumed");
  expect_same_parameters(dir_ / "single" / "checkpoint-last", dir_ / "resumed" / "checkpoint-last", kTolerance);
}

// The distributed optimizer (each rank updates its slice; LAMB's per-tensor norms summed over the
// slices) takes the same steps too. Its reduce-scatter is dense: each log line's all_reduce_mb is
// the whole arena per step, which tells it ran.
TEST_F(DistributedTraining, TheDistributedOptimizerTakesTheSameStepsWithLamb) {
  ASSERT_EQ(train("single", 0, 2, "--optimizer lamb"), 0) << log("single");
  ASSERT_EQ(train("sharded", 2, 1, "--optimizer lamb --distributed-optimizer"), 0) << log("sharded");
  const std::vector<Json> single = read_lines(dir_ / "single" / "metrics.jsonl");
  const std::vector<Json> sharded = read_lines(dir_ / "sharded" / "metrics.jsonl");
  ASSERT_EQ(single.size(), sharded.size());
  const SafetensorsFile saved = SafetensorsFile::open(dir_ / "single" / "checkpoint-last" / "model.safetensors");
  int64_t total = 0;
  for (const std::string& name : saved.sorted_names()) total += saved.tensor(name).numel();
  int64_t previous_step = 0;
  for (size_t i = 0; i < single.size(); ++i) {
    SCOPED_TRACE(single[i].dump());
    ASSERT_EQ(single[i]["step"], sharded[i]["step"]);
    for (const char* field : {"loss", "grad_norm", "accuracy"}) {
      if (!single[i].contains(field)) continue;
      const double a = single[i][field].get<double>(), b = sharded[i][field].get<double>();
      EXPECT_NEAR(a, b, kTolerance * std::max(1.0, std::fabs(a))) << field;
    }
    if (sharded[i]["type"] != "train") continue;
    const auto steps = static_cast<double>(sharded[i]["step"].get<int64_t>() - previous_step);
    previous_step = sharded[i]["step"].get<int64_t>();
    // The arena holds the parameters padded to 16-element offsets: at least `total` floats a step.
    EXPECT_GE(sharded[i]["all_reduce_mb"].get<double>(), steps * static_cast<double>(total) * 4e-6);
  }
  expect_same_parameters(dir_ / "single" / "checkpoint-last", dir_ / "sharded" / "checkpoint-last", kTolerance);
}

// A distributed-optimizer checkpoint holds every rank's moments (rank 0 gathers them): stopped at
// step 6, it resumes both on two ranks with the distributed optimizer (each restoring its slice)
// and in one process, and both end where the uninterrupted one-process run ends.
TEST_F(DistributedTraining, ADistributedOptimizerCheckpointResumesOnTwoRanksAndInOneProcess) {
  ASSERT_EQ(train("single", 0, 2), 0) << log("single");
  ASSERT_EQ(train("stopped", 2, 1, "--distributed-optimizer --stop-after-steps 6"), 0) << log("stopped");
  fs::copy(dir_ / "stopped", dir_ / "alone", fs::copy_options::recursive);
  ASSERT_EQ(train("stopped", 2, 1, "--distributed-optimizer --resume auto"), 0) << log("stopped");
  ASSERT_EQ(train("alone", 0, 2, "--resume auto"), 0) << log("alone");
  expect_same_parameters(dir_ / "single" / "checkpoint-last", dir_ / "stopped" / "checkpoint-last", kTolerance);
  expect_same_parameters(dir_ / "single" / "checkpoint-last", dir_ / "alone" / "checkpoint-last", kTolerance);
}

// SIGTERM to mpirun (which passes it to the ranks): the ranks agree to stop before the same step,
// rank 0 saves checkpoint-last at the last step logged, and one process resumes from it.
TEST_F(DistributedTraining, SigtermToMpirunStopsEveryRankAtOneStepAndRankZeroSaves) {
  const fs::path output = dir_ / "stopped";
  const std::string arguments =
      " train --quiet --model " + fixture_path("tiny-bert-cls").string() +
      " --task classification --labels Bearish,Bullish,Neutral --text-column text --label-column sentiment" +
      " --train-file " + (dir_ / "train.csv").string() +
      " --max-length 40 --batch-size 4 --schedule constant --logging-steps 1 --threads 1 --output-dir " +
      output.string();
  const std::string command =
      "exec " + mpirun_prefix(2) + binary().string() + arguments + " --max-steps 1000000 > " + (dir_ / "stopped.log").string() + " 2>&1";
  const pid_t launcher = launch(command);
  ASSERT_GE(launcher, 0);
  // Three steps logged (complete lines only), then SIGTERM.
  const fs::path metrics = output / "metrics.jsonl";
  const size_t logged = wait_for_lines(metrics, 3, 60);
  kill(launcher, SIGTERM);
  ASSERT_TRUE(wait_for_exit(launcher, 60).has_value()) << "mpirun did not exit within 60 s of SIGTERM\n"
                                                       << log("stopped");
  ASSERT_GE(logged, 3u) << log("stopped");
  EXPECT_NE(log("stopped").find("interrupted; resume with --resume auto"), std::string::npos) << log("stopped");

  const std::vector<Json> lines = read_lines(metrics);
  ASSERT_FALSE(lines.empty());
  const int64_t last_logged = lines.back()["step"].get<int64_t>();
  std::ifstream state_file(output / "checkpoint-last" / "trainer_state.json");
  ASSERT_TRUE(state_file) << "rank 0 saved no checkpoint-last\n" << log("stopped");
  const Json state = Json::parse(state_file);
  EXPECT_EQ(state["global_step"].get<int64_t>(), last_logged);

  // One process, accumulation 2 (the same global batch), two more steps.
  const std::string resumed = dir_ / "resumed.log";
  ASSERT_EQ(run_command(binary().string() + arguments + " --gradient-accumulation-steps 2 --resume auto --max-steps " +
                        std::to_string(last_logged + 2) + " > " + resumed + " 2>&1"),
            0)
      << log("resumed");
  EXPECT_NE(log("resumed").find("steps: " + std::to_string(last_logged + 2) + "/" + std::to_string(last_logged + 2) +
                                " (resumed at " + std::to_string(last_logged) + ")"),
            std::string::npos)
      << log("resumed");
}

// An error on one rank ends the job instead of leaving the others in a collective forever: rank 0
// alone writes the checkpoint store, whose only root the test turns into a file once training
// has started, so rank 0 fails at its first store save while rank 1 goes on to the next step
// (without MPI_Abort the job hung: checked).
TEST_F(DistributedTraining, AnErrorOnOneRankEndsTheJob) {
  const fs::path root = dir_ / "store";
  fs::create_directories(root);
  const std::string command =
      "exec " + mpirun_prefix(2) + binary().string() + " train --quiet --model " + fixture_path("tiny-bert-cls").string() +
      " --task classification --labels Bearish,Bullish,Neutral --text-column text --label-column sentiment" +
      " --train-file " + (dir_ / "train.csv").string() +
      " --max-length 40 --batch-size 4 --max-steps 1000000 --save-steps 200 --threads 1 --output-dir " +
      (dir_ / "failing").string() + " --store-roots " + root.string() + " --store-replicas 1 > " +
      (dir_ / "failing.log").string() + " 2>&1";
  const pid_t launcher = launch(command);
  ASSERT_GE(launcher, 0);
  // metrics.jsonl appears when training starts, 200 steps before the first save.
  const auto started = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!fs::exists(dir_ / "failing" / "metrics.jsonl") && std::chrono::steady_clock::now() < started) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  fs::remove_all(root);
  std::ofstream(root) << "not a folder\n";
  const std::optional<int> status = wait_for_exit(launcher, 60);
  ASSERT_TRUE(status.has_value()) << "the job hung after rank 0 failed\n" << log("failing");
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) != 0) << log("failing");
  EXPECT_NE(log("failing").find("cannot save the last checkpoint to checkpoint store"), std::string::npos)
      << log("failing");
}

// Ranks started with different settings (mpirun's "A : B" form, here another seed) stop before
// the first step with one message naming what differs, instead of training apart; the kernel
// thread count may differ (hosts differ in cores).
TEST_F(DistributedTraining, RanksThatDisagreeStopBeforeTheFirstStep) {
  const std::string rank = binary().string() + " train --quiet --model " + fixture_path("tiny-bert-cls").string() +
                           " --task classification --labels Bearish,Bullish,Neutral --text-column text" +
                           " --label-column sentiment --train-file " + (dir_ / "train.csv").string() +
                           " --max-length 40 --batch-size 4 --max-steps 4 --output-dir " + (dir_ / "apart").string();
  const auto run_job = [&](const std::string& first, const std::string& second, const std::string& log_name) {
    const pid_t launcher =
        launch("exec " + mpirun_prefix(1) + rank + " " + first + " : -np 1 " + rank + " " + second + " > " +
               (dir_ / (log_name + ".log")).string() + " 2>&1");
    return wait_for_exit(launcher, 60);
  };
  const std::optional<int> apart = run_job("--threads 1 --seed 1", "--threads 1 --seed 2", "apart");
  ASSERT_TRUE(apart.has_value()) << "the job hung\n" << log("apart");
  EXPECT_TRUE(WIFEXITED(*apart) && WEXITSTATUS(*apart) != 0) << log("apart");
  EXPECT_NE(log("apart").find("the 2 ranks do not agree on the configuration"), std::string::npos) << log("apart");
  EXPECT_FALSE(fs::exists(dir_ / "apart" / "metrics.jsonl")) << "a step was logged";

  const std::optional<int> threads = run_job("--threads 1 --seed 1", "--threads 2 --seed 1", "threads");
  ASSERT_TRUE(threads.has_value()) << log("threads");
  EXPECT_TRUE(WIFEXITED(*threads) && WEXITSTATUS(*threads) == 0) << log("threads");
}

TEST(Communicator, AloneIsAWorldOfOneWhoseCollectivesReturnTheirInput) {
  if (std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr) GTEST_SKIP() << "this test process runs under mpirun";
  const dist::Communicator& world = dist::Communicator::world();
  EXPECT_EQ(world.rank(), 0);
  EXPECT_EQ(world.size(), 1);
  EXPECT_FALSE(world.distributed());
  std::vector<float> values = {1.5f, -2.0f};
  world.all_reduce_sum(values.data(), 2);
  EXPECT_EQ(values, (std::vector<float>{1.5f, -2.0f}));
  EXPECT_TRUE(world.any(true));
  EXPECT_FALSE(world.any(false));
}

}  // namespace
}  // namespace scalebert
