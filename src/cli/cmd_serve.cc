// `scalebert serve`: the KServe v2 inference server (HTTP/REST and gRPC) over a Triton-style model
// repository, until SIGTERM or SIGINT, which drain the requests in flight and exit 0.
#include <csignal>
#include <cstdio>
#include <pthread.h>

#include "cli/common.h"
#include "serve/server.h"

namespace scalebert::cli {

int run_serve(std::span<char* const> arguments) {
  ArgParser args("serve",
                 "Serve a model repository (Triton layout: <repo>/<model>/config.pbtxt and numeric version "
                 "folders) with the KServe v2 protocol over HTTP/REST and gRPC, and Prometheus metrics on their own port. "
                 "SIGTERM or SIGINT drain the requests in flight and exit 0. See docs/serving.md.");
  args.required("model-repository", "DIR", "the model repository")
      .option("host", "ADDR", "address to listen on (0.0.0.0 for every interface)", "127.0.0.1")
      .option("http-port", "PORT", "HTTP/REST port", "8000")
      .option("metrics-port", "PORT", "Prometheus metrics port (-1: none)", "8002")
      .option("grpc-port", "PORT", "KServe v2 gRPC port (0: no gRPC)", "8001")
      .flag("no-grpc", "serve HTTP only (as --grpc-port 0)")
      .option("http-threads", "N", "connections served at once", "96")
      .option("max-body-mb", "MB", "largest request body accepted (413 above)", "64")
      .option("read-timeout-ms", "MS", "a client idle this long in the middle of a request is cut off", "5000")
      .option("max-queue-size", "N", "queued requests per model when config.pbtxt sets none (503 when full)", "256")
      .option("threads", "N", "intra-op threads per instance (0: parameters.threads, else cores / instances)", "0")
      .flag("no-strict-readiness", "report ready while some model failed to load");
  if (!args.parse(arguments)) return 0;

  serve::ServerOptions options;
  options.model_repository = args.get("model-repository");
  options.host = args.get("host");
  options.http_port = static_cast<int>(args.get_int("http-port", 0));
  options.metrics_port = static_cast<int>(args.get_int("metrics-port", -1));
  options.grpc_port = args.flag_set("no-grpc") ? -1 : static_cast<int>(args.get_int("grpc-port", 0));
  if (options.grpc_port == 0) options.grpc_port = -1;  // 0 disables here; ServerOptions' 0 is "any port"
  options.http_threads = static_cast<int>(args.get_int("http-threads", 1));
  options.max_body_bytes = static_cast<size_t>(args.get_int("max-body-mb", 1)) << 20;
  options.read_timeout = std::chrono::milliseconds(args.get_int("read-timeout-ms", 1));
  options.limits.default_max_queue_size = args.get_int("max-queue-size", 1);
  options.limits.threads_per_instance = static_cast<int>(args.get_int("threads", 0));
  options.strict_readiness = !args.flag_set("no-strict-readiness");

  // The signals are blocked in every thread (the server's threads inherit the mask) and taken here
  // with sigwait, so shutdown runs as ordinary code rather than in a signal handler.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  serve::InferenceServer server(options);
  server.start();
  std::fprintf(stderr, "scalebert serve: HTTP on %s:%d, gRPC on %s:%d, metrics on %s:%d, %zu model version(s) loaded\n",
               options.host.c_str(), server.http_port(), options.host.c_str(), server.grpc_port(),
               options.host.c_str(), server.metrics_port(), server.repository().loaded().size());
  for (const auto& item : server.repository().index()) {
    if (item.value("state", "") != "READY") {
      std::fprintf(stderr, "scalebert serve: model %s is %s: %s\n", item.value("name", "").c_str(),
                   item.value("state", "not loaded").c_str(), item.value("reason", "").c_str());
    }
  }
  int received = 0;
  sigwait(&signals, &received);
  std::fprintf(stderr, "scalebert serve: %s, draining\n", received == SIGTERM ? "SIGTERM" : "SIGINT");
  server.stop();
  std::fprintf(stderr, "scalebert serve: stopped\n");
  return 0;
}

}  // namespace scalebert::cli
