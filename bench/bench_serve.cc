// Load generator for the inference server: tweet-sized text requests on loopback at concurrency
// 1..64, against an in-process server with dynamic batching and again without, reporting
// throughput, p50/p99 latency and the mean batch the server ran. Bounded: each point runs for
// --seconds (and at most --max-requests requests), and the server only listens on 127.0.0.1.
// First it times the engine alone on the same requests (the server's compute path, one request at
// a time and max-batch at once): batching saves compute, so that ratio is what it has to work with.
//
//   bench_serve --model DIR [--task embeddings|classification] [--seconds 3] [--concurrency 1,8,32,64] [--delay-us 5000]
//               [--max-batch 32] [--threads 2] [--instances 1] [--texts FILE] [--binary] [--only batching|no-batch]
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/threads.h"
#include "model/inference_session.h"
#include "serve/model_config.h"
#include "serve/protocol.h"
#include "serve/server.h"
#include "serve/task.h"

namespace {

using namespace scalebert;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

// Tweet-sized financial headlines (10-30 tokens), the traffic the server is built for.
const std::vector<std::string> kTweets = {
    "$AAPL - Apple beats on revenue, guides above consensus for the holiday quarter https://t.co/x1",
    "$TSLA deliveries miss estimates as margins compress; shares slide 6% premarket",
    "Fed holds rates steady, signals two cuts later this year as inflation cools",
    "$JPM - JPMorgan raises dividend after clearing the stress test",
    "Oil jumps 3% after OPEC+ extends output cuts into next quarter",
    "$NFLX subscriber growth tops forecasts, stock up 12% after hours",
    "Moody's turns negative on regional banks citing commercial real estate exposure",
    "$AMZN - Amazon Web Services revenue growth reaccelerates to 17%",
    "Treasury yields fall to three-month low after weak jobs report",
    "$BA - Boeing cut to neutral at Credit Suisse on delivery delays",
    "Euro zone PMI signals contraction for a fourth straight month",
    "$NVDA data center sales triple year over year, beats by a wide margin",
    "Gold hits record high as dollar weakens and central banks keep buying",
    "$XOM - Exxon to buy Pioneer in $60 billion all-stock deal",
    "Retail sales rise more than expected in March, boosting consumer stocks",
    "$DIS - Disney cuts 7,000 jobs in cost-saving push, shares flat",
};

struct Args {
  fs::path model;
  double seconds = 3.0;
  int64_t max_requests = 20000;
  std::vector<int> concurrency = {1, 2, 4, 8, 16, 32, 64};
  int64_t delay_us = 5000;
  int64_t max_batch = 32;
  int threads = 2;
  int instances = 1;
  bool binary = false;
  // Which schedulers to measure: both (the default, for the ratio), or one of them (for profiling).
  bool with_batching = true, without_batching = true;
  // embeddings (mean pooling, every row) or classification (a fine-tuned classifier folder: logits,
  // the last layer on the [CLS] rows only).
  std::string task = "embeddings";
  std::vector<std::string> texts = kTweets;
};

[[noreturn]] void usage(const char* problem) {
  std::fprintf(stderr,
               "bench_serve: %s\nusage: bench_serve --model DIR [--task embeddings|classification] [--seconds S] [--max-requests N] "
               "[--concurrency 1,8,32] [--delay-us US] [--max-batch N] [--threads N] [--instances N] [--texts FILE] [--binary] [--only batching|no-batch]\n",
               problem);
  std::exit(2);
}

Args parse(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value for " + flag).c_str());
      return argv[++i];
    };
    if (flag == "--model") args.model = value();
    else if (flag == "--seconds") args.seconds = std::stod(value());
    else if (flag == "--max-requests") args.max_requests = std::stoll(value());
    else if (flag == "--delay-us") args.delay_us = std::stoll(value());
    else if (flag == "--max-batch") args.max_batch = std::stoll(value());
    else if (flag == "--threads") args.threads = std::stoi(value());
    else if (flag == "--instances") args.instances = std::stoi(value());
    else if (flag == "--binary") args.binary = true;
    else if (flag == "--only") {
      const std::string mode = value();
      if (mode != "batching" && mode != "no-batch") usage("--only must be batching or no-batch");
      args.with_batching = mode == "batching";
      args.without_batching = mode == "no-batch";
    }
    else if (flag == "--task") args.task = value();
    else if (flag == "--concurrency") {
      args.concurrency.clear();
      std::stringstream list(value());
      for (std::string item; std::getline(list, item, ',');) args.concurrency.push_back(std::stoi(item));
    } else if (flag == "--texts") {
      std::ifstream in(value());
      args.texts.clear();
      for (std::string line; std::getline(in, line);) {
        if (!line.empty()) args.texts.push_back(line);
      }
      if (args.texts.empty()) usage("no texts in --texts file");
    } else {
      usage(("unknown flag " + flag).c_str());
    }
  }
  if (args.model.empty()) usage("--model is required");
  if (args.task != "embeddings" && args.task != "classification") usage("--task must be embeddings or classification");
  if (args.seconds <= 0 || args.seconds > 60) usage("--seconds must be in (0, 60]");
  for (int c : args.concurrency) {
    if (c < 1 || c > 256) usage("concurrency must be in 1..256");
  }
  return args;
}

// The one output requested: the task's main tensor.
std::string output_name(const Args& args) { return args.task == "classification" ? "logits" : "embeddings"; }

// config.pbtxt of the model "minilm", batching or not.
std::string config_text(const Args& args, bool batching) {
  std::ostringstream config;
  config << "name: \"minilm\"\nbackend: \"scalebert\"\nmax_batch_size: " << args.max_batch << "\n"
         << "input [ { name: \"text\" data_type: TYPE_STRING dims: [ 1 ] } ]\n"
         << "output [ { name: \"" << output_name(args) << "\" data_type: TYPE_FP32 dims: [ -1 ] } ]\n"
         << "instance_group [ { count: " << args.instances << " kind: KIND_CPU } ]\n"
         << "parameters { key: \"task\" value: { string_value: \"" << args.task << "\" } }\n"
         << "parameters { key: \"threads\" value: { string_value: \"" << args.threads << "\" } }\n";
  if (batching) {
    config << "dynamic_batching { max_queue_delay_microseconds: " << args.delay_us
           << " default_queue_policy { max_queue_size: 1024 } }\n";
  }
  // Without dynamic_batching: Triton's default scheduler, every request runs alone.
  return config.str();
}

// A repository with the one model.
fs::path make_repository(const Args& args, bool batching) {
  const fs::path root = fs::temp_directory_path() / ("scalebert_bench_serve_" + std::to_string(getpid()));
  fs::remove_all(root);
  fs::create_directories(root / "minilm");
  fs::create_directory_symlink(fs::absolute(args.model), root / "minilm" / "1");
  std::ofstream(root / "minilm" / "config.pbtxt") << config_text(args, batching);
  return root;
}

struct Point {
  int concurrency = 0;
  int64_t requests = 0, errors = 0;
  double seconds = 0, p50_ms = 0, p99_ms = 0, mean_batch = 0, batch_compute_ms = 0;
};

// One text, the index-th of the texts (cycling).
serve::InferRequest text_request(const Args& args, size_t index) {
  serve::InferRequest request;
  serve::WireTensor text;
  text.name = "text";
  text.datatype = serve::DataType::kBytes;
  text.shape = {1, 1};
  text.strings = {args.texts[index % args.texts.size()]};
  text.binary = args.binary;
  request.inputs.push_back(text);
  request.outputs.push_back({output_name(args), args.binary});
  return request;
}

std::string request_body(const Args& args, size_t index, std::optional<size_t>& header_length) {
  serve::EncodedResponse encoded = serve::encode_infer_request(text_request(args, index));
  header_length = encoded.header_length;
  return encoded.body;
}

// The engine alone: the server's own compute path (prepare_job, then run_batch on an
// InferenceSession, as an instance runs it) without HTTP, queue or threads handing requests over,
// one request at a time and max-batch requests at once, on this thread with the instances' thread
// count. Its ratio bounds what dynamic batching can give the server: batching saves compute per
// request, nothing else.
struct EngineTimes {
  double single_ms = 0, batched_ms = 0;  // per request
};

EngineTimes measure_engine(const Args& args) {
  const serve::ModelConfig config = serve::parse_model_config(config_text(args, true));
  const std::unique_ptr<serve::TaskModel> task = serve::TaskModel::load(config, args.model);
  EngineTimes times;
  {
    const ScopedNumThreads threads(args.threads);
    InferenceSession session(task->weights);
    PackedBatch scratch;
    std::vector<std::shared_ptr<serve::InferJob>> owned;
    std::vector<serve::InferJob*> jobs;
    for (int64_t i = 0; i < args.max_batch; ++i) {
      owned.push_back(serve::prepare_job(*task, config, text_request(args, static_cast<size_t>(i))));
      jobs.push_back(owned.back().get());
    }
    // Per request, over one window of about 150 ms of runs of `size` requests each.
    const auto window_ms = [&](int64_t size) {
      int64_t runs = 0, requests = 0;
      const auto start = Clock::now();
      while (Clock::now() - start < std::chrono::milliseconds(150)) {
        const int64_t first = (runs * size) % args.max_batch;
        serve::run_batch(*task, session, std::span(jobs).subspan(static_cast<size_t>(first), static_cast<size_t>(size)), scratch);
        ++runs;
        requests += size;
      }
      return std::chrono::duration<double, std::milli>(Clock::now() - start).count() / static_cast<double>(requests);
    };
    window_ms(1);  // warm-up: every shape class built once
    window_ms(args.max_batch);
    // Alternating windows, medians: both sizes see the same moments of a noisy machine.
    std::vector<double> single, batched;
    for (int window = 0; window < 7; ++window) {
      single.push_back(window_ms(1));
      batched.push_back(window_ms(args.max_batch));
    }
    const auto median = [](std::vector<double> values) {
      std::nth_element(values.begin(), values.begin() + static_cast<ptrdiff_t>(values.size() / 2), values.end());
      return values[values.size() / 2];
    };
    times.single_ms = median(single);
    times.batched_ms = median(batched);
  }
  // This thread's team is done: its idle workers would stop the servers' teams from spinning.
  release_thread_pool();
  return times;
}

Point run_point(const Args& args, int port, int concurrency) {
  std::atomic<int64_t> issued{0}, errors{0};
  std::vector<std::vector<double>> latencies(static_cast<size_t>(concurrency));
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration<double>(args.seconds);
  std::vector<std::thread> workers;
  for (int w = 0; w < concurrency; ++w) {
    workers.emplace_back([&, w] {
      httplib::Client client("127.0.0.1", port);
      client.set_keep_alive(true);
      client.set_tcp_nodelay(true);  // else Nagle holds the body behind the headers for a delayed ACK (40 ms)
      client.set_read_timeout(30);
      client.set_connection_timeout(5);
      size_t index = static_cast<size_t>(w);
      while (Clock::now() < end && issued.fetch_add(1) < args.max_requests) {
        std::optional<size_t> header_length;
        const std::string body = request_body(args, index++, header_length);
        httplib::Headers headers;
        if (header_length) headers.emplace("Inference-Header-Content-Length", std::to_string(*header_length));
        const auto sent = Clock::now();
        const auto result = client.Post("/v2/models/minilm/infer", headers, body,
                                        header_length ? "application/octet-stream" : "application/json");
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - sent).count();
        if (!result || result->status != 200) {
          if (errors.fetch_add(1) == 0) {
            std::fprintf(stderr, "bench_serve: first error: %s\n",
                         result ? (std::to_string(result->status) + " " + result->body).c_str()
                                : httplib::to_string(result.error()).c_str());
          }
          continue;
        }
        latencies[static_cast<size_t>(w)].push_back(ms);
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  Point point;
  point.concurrency = concurrency;
  point.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<double> all;
  for (const auto& list : latencies) all.insert(all.end(), list.begin(), list.end());
  std::sort(all.begin(), all.end());
  point.requests = static_cast<int64_t>(all.size());
  point.errors = errors.load();
  if (!all.empty()) {
    point.p50_ms = all[all.size() / 2];
    point.p99_ms = all[std::min(all.size() - 1, static_cast<size_t>(static_cast<double>(all.size()) * 0.99))];
  }
  return point;
}

}  // namespace

int main(int argc, char** argv) {
  restart_with_openmp_spin_count(argv, kServingSpinCount);  // as `scalebert serve` does
  const Args args = parse(argc, argv);
  std::printf("# bench_serve: model %s (task %s), %zu texts, %.1f s per point, max batch %lld, queue delay %lld us, "
              "%d instance(s) x %d threads, %s requests, loopback HTTP/1.1 keep-alive\n",
              args.model.string().c_str(), args.task.c_str(), args.texts.size(), args.seconds, static_cast<long long>(args.max_batch),
              static_cast<long long>(args.delay_us), args.instances, args.threads, args.binary ? "binary" : "JSON");
  std::printf("%-10s %6s %9s %8s %9s %9s %8s %11s %8s\n", "mode", "conc", "requests", "errors", "req/s", "p50 ms",
              "p99 ms", "mean batch", "batch ms");
  const EngineTimes engine = measure_engine(args);
  std::printf("# engine alone (the server's compute path, no HTTP): %.3f ms per request one at a time, %.3f ms per "
              "request in batches of %lld: %.2fx, what batching saves in compute\n",
              engine.single_ms, engine.batched_ms, static_cast<long long>(args.max_batch), engine.single_ms / engine.batched_ms);
  std::vector<std::pair<bool, std::vector<Point>>> results;
  for (bool batching : {true, false}) {
    if (!(batching ? args.with_batching : args.without_batching)) continue;
    const fs::path root = make_repository(args, batching);
    serve::ServerOptions options;
    options.model_repository = root;
    options.http_port = 0;
    options.metrics_port = -1;
    options.http_threads = 160;
    serve::InferenceServer server(options);
    server.start();
    if (!server.repository().all_ready()) {
      std::fprintf(stderr, "bench_serve: model failed to load: %s\n", server.repository().index().dump().c_str());
      return 1;
    }
    run_point(args, server.http_port(), 2);  // warm-up: tokenizer caches, oneDNN shape classes
    std::vector<Point> points;
    for (int concurrency : args.concurrency) {
      const auto model = server.repository().get("minilm");
      const uint64_t items0 = model->stats().inference_count, runs0 = model->stats().execution_count,
                     infer0 = model->stats().compute_infer.ns, infer_count0 = model->stats().compute_infer.count;
      Point point = run_point(args, server.http_port(), concurrency);
      const uint64_t runs = model->stats().execution_count - runs0;
      if (runs > 0) {
        point.mean_batch = static_cast<double>(model->stats().inference_count - items0) / static_cast<double>(runs);
        // compute_infer counts each request with its batch's compute time: the request-weighted mean batch time.
        const uint64_t counted = model->stats().compute_infer.count - infer_count0;
        point.batch_compute_ms =
            static_cast<double>(model->stats().compute_infer.ns - infer0) / 1e6 / static_cast<double>(std::max<uint64_t>(1, counted));
      }
      std::printf("%-10s %6d %9lld %8lld %9.1f %9.2f %8.2f %11.2f %8.2f\n", batching ? "batching" : "no-batch",
                  point.concurrency, static_cast<long long>(point.requests), static_cast<long long>(point.errors),
                  static_cast<double>(point.requests) / point.seconds, point.p50_ms, point.p99_ms, point.mean_batch,
                  point.batch_compute_ms);
      std::fflush(stdout);
      points.push_back(point);
    }
    results.emplace_back(batching, std::move(points));
    server.stop();
    fs::remove_all(root);
  }
  // The targets at concurrency 32 (when measured).
  for (size_t i = 0; results.size() == 2 && i < args.concurrency.size(); ++i) {
    if (args.concurrency[i] != 32) continue;
    const Point& with = results[0].second[i];
    const Point& without = results[1].second[i];
    const double speedup = (static_cast<double>(with.requests) / with.seconds) /
                           std::max(1e-9, static_cast<double>(without.requests) / without.seconds);
    const double bound = 2.0 * static_cast<double>(args.delay_us) / 1000.0 + with.batch_compute_ms;
    std::printf("# concurrency 32: batching/no-batching throughput %.2fx (target >= 3x); p99 %.2f ms vs "
                "2 x delay + one batch = %.2f ms (target p99 <= that)\n",
                speedup, with.p99_ms, bound);
  }
  return 0;
}
