// The inference server: a model repository served over HTTP/REST with the KServe v2 protocol and
// Triton's extensions (binary tensor data, model configuration, statistics, model repository), the
// same over gRPC (grpc_server.h) when asked, and Prometheus metrics on a port of their own.
//
// Lifecycle: start() opens both ports first (so /v2/health/live answers while models load), then
// loads the repository; /v2/health/ready turns true when loading is done (and, with strict
// readiness, every model loaded). stop() drains: readiness off, the listeners close and finish the
// requests they are serving, then every model finishes its queue.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "serve/repository.h"

namespace httplib {
class Server;
}

namespace scalebert::serve {

class GrpcServer;

struct ServerOptions {
  std::filesystem::path model_repository;
  std::string host = "127.0.0.1";
  int http_port = 8000;     // 0: any free port (tests)
  int metrics_port = 8002;  // 0: any free port; -1: no metrics server
  int grpc_port = -1;       // 0: any free port; -1: no gRPC (the serve command defaults to 8001)
  size_t max_body_bytes = size_t{64} << 20;
  int http_threads = 96;    // connections served at once (each blocks while its request is queued)
  std::chrono::milliseconds read_timeout{5000};  // a client slower than this per read is cut off
  bool strict_readiness = true;  // ready only when every model is ready
  ServeLimits limits;
};

class InferenceServer {
 public:
  explicit InferenceServer(ServerOptions options);
  ~InferenceServer();
  InferenceServer(const InferenceServer&) = delete;
  InferenceServer& operator=(const InferenceServer&) = delete;

  // Binds the ports (IoError when one is taken), starts serving, loads the repository; returns
  // when the models are loaded (failures recorded in the index, not thrown).
  void start();
  // Drains and stops (idempotent).
  void stop();

  int http_port() const { return http_port_; }
  int metrics_port() const { return metrics_port_; }
  int grpc_port() const { return grpc_port_; }  // -1 without gRPC
  bool ready() const;
  bool stopping() const { return stopping_.load(); }
  ModelRepository& repository() { return *repository_; }

  // Prometheus text of every loaded model (the body of GET /metrics).
  std::string metrics_text() const;

 private:
  void add_routes();

  ServerOptions options_;
  std::unique_ptr<ModelRepository> repository_;
  std::unique_ptr<httplib::Server> http_;
  std::unique_ptr<httplib::Server> metrics_;
  std::unique_ptr<GrpcServer> grpc_;  // the same models over KServe v2 gRPC (grpc_server.h)
  std::thread http_thread_, metrics_thread_;
  int http_port_ = 0, metrics_port_ = -1, grpc_port_ = -1;
  std::atomic<bool> loaded_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> stopped_{false};
};

}  // namespace scalebert::serve
