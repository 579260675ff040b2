// Kernel threads and OpenMP worker pools. GNU OpenMP counts the workers of every thread's pool, and
// once they outnumber the cores every team's barriers sleep in the kernel instead of spinning: a
// served model's instances then run small batches 2-3x slower (release_thread_pool in
// core/threads.h). These tests count the process's threads (/proc/self/task) to check that
// loading a served model and answering requests leave no pool behind on the threads that did it.
// ctest runs them with OMP_NUM_THREADS=2, so every parallel region asks for a team of two.
#include <gtest/gtest.h>
#include <omp.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "core/threads.h"
#include "serve/model_config.h"
#include "serve/protocol.h"
#include "serve/served_model.h"
#include "testing.h"

namespace scalebert {
namespace {

namespace fs = std::filesystem;

int64_t process_threads() {
  int64_t count = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator("/proc/self/task")) ++count;
  return count;
}

// Threads end a little after they are told to: waits up to 5 s for the count to reach `expected`.
int64_t settled_process_threads(int64_t expected) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  int64_t count = process_threads();
  while (count != expected && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    count = process_threads();
  }
  return count;
}

// Runs `body` on a new thread, which starts with no OpenMP pool of its own.
template <typename Body>
void on_fresh_thread(Body&& body) {
  std::thread thread(std::forward<Body>(body));
  thread.join();
}

int64_t team_size_of_a_parallel_region() {
  int size = 0;
#pragma omp parallel
  {
#pragma omp single
    size = omp_get_num_threads();
  }
  return size;
}

TEST(Threads, ScopedNumThreadsRestoresTheCallersCount) {
  on_fresh_thread([] {
    set_num_threads(2);
    {
      const ScopedNumThreads serial(1);
      EXPECT_EQ(num_threads(), 1);
      EXPECT_EQ(team_size_of_a_parallel_region(), 1);
    }
    EXPECT_EQ(num_threads(), 2);
  });
}

TEST(Threads, ReleaseThreadPoolEndsTheCallingThreadsWorkers) {
  on_fresh_thread([] {
    set_num_threads(2);
    const int64_t before = process_threads();
    ASSERT_EQ(team_size_of_a_parallel_region(), 2);
    ASSERT_EQ(settled_process_threads(before + 1), before + 1) << "a team of two starts one worker";
    release_thread_pool();
    EXPECT_EQ(settled_process_threads(before), before) << "the worker outlived release_thread_pool";
    // The thread can still run parallel regions: a new pool starts.
    EXPECT_EQ(team_size_of_a_parallel_region(), 2);
    release_thread_pool();
  });
}

// A served model loaded on one thread and asked on another: while each of them lives, the process
// holds the threads it did before, that thread and the model's instance (one thread, "threads" 1:
// no team of its own), and no pool workers. (A pool also ends with its thread, so the checks run
// before the threads exit.)
TEST(Threads, ServedModelLeavesNoWorkerPoolOnTheLoadingOrRequestThreads) {
  SCALEBERT_REQUIRE_PATH(testing::fixture_path("tiny-bert"));
  const serve::ModelConfig config = serve::parse_model_config(R"(name: "tiny"
max_batch_size: 32
input [ { name: "text" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "embeddings" data_type: TYPE_FP32 dims: [ -1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
parameters { key: "task" value: { string_value: "embeddings" } }
parameters { key: "normalize" value: { string_value: "true" } }
parameters { key: "threads" value: { string_value: "1" } }
)");
  const int64_t before = process_threads();
  std::shared_ptr<serve::ServedModel> model;
  on_fresh_thread([&] {
    set_num_threads(2);
    model = serve::ServedModel::load(config, 1, testing::fixture_path("tiny-bert"), serve::ServeLimits{});
    // This thread and the instance; a pool's worker would outlive the load while this thread lives.
    EXPECT_EQ(settled_process_threads(before + 2), before + 2) << "loading left a worker pool behind";
  });

  // Twenty texts in one request: their normalization is split into two chunks of rows, which on
  // a thread with two kernel threads would start a team.
  serve::InferRequest request;
  serve::WireTensor text;
  text.name = "text";
  text.datatype = serve::DataType::kBytes;
  text.shape = {20, 1};
  for (int i = 0; i < 20; ++i) text.strings.push_back("the bank raised its dividend " + std::to_string(i));
  request.inputs.push_back(text);
  on_fresh_thread([&] {
    set_num_threads(2);
    const serve::InferResponse response = model->infer(request);
    ASSERT_EQ(response.outputs.size(), 1u);
    EXPECT_EQ(response.outputs[0].shape, (std::vector<int64_t>{20, 32}));
    EXPECT_EQ(num_threads(), 2) << "infer() did not restore the request thread's kernel threads";
    EXPECT_EQ(settled_process_threads(before + 2), before + 2) << "a request left a worker pool behind";
  });
  model.reset();
  EXPECT_EQ(settled_process_threads(before), before);
}

}  // namespace
}  // namespace scalebert
