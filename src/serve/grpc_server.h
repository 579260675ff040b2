// The inference server's gRPC front end: KServe v2 inference.GRPCInferenceService (and Triton's
// ModelConfig, ModelStatistics and repository RPCs) over the same models, batchers and statistics
// as the HTTP routes of server.cc. Only the wire form differs: requests become the protocol's
// InferRequest (protocol.h) and run through ServedModel::infer like an HTTP request; errors become
// gRPC status codes with the same messages (400 -> INVALID_ARGUMENT, 404 -> NOT_FOUND,
// 503 -> UNAVAILABLE, else INTERNAL).
//
// gRPC's synchronous server: each RPC runs on a thread of gRPC's pool (at most `max_threads`; past
// that gRPC answers RESOURCE_EXHAUSTED) and waits for its batch like an HTTP connection thread; the
// batcher and instances never wait on a gRPC thread.
//
// ModelStreamInfer (Triton's streaming extension) runs each request of a stream through the same
// path as ModelInfer, but on worker threads of the stream's own (started as requests arrive, at
// most `max_threads` per stream), so that a stream's requests wait in the batcher together and are
// batched; each answer is written as it completes (one Write at a time), in completion order. When
// the client half-closes, the stream ends OK once every request read is answered. shutdown() ends
// open streams as soon as the requests they hold are answered (cancelling them: a sync handler
// blocked in Read has no other way out), so an idle stream never holds up a drain.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "grpc_service.pb.h"
#include "serve/protocol.h"

namespace grpc {
class Server;
}

namespace scalebert::serve {

class InferenceServer;

struct GrpcOptions {
  std::string host = "127.0.0.1";
  int port = 8001;                              // 0: any free port
  size_t max_message_bytes = size_t{64} << 20;  // larger requests: RESOURCE_EXHAUSTED
  int max_threads = 96;                         // RPCs served at once; also requests one stream runs at once
};

// Raw tensor bytes <-> WireTensor elements: decode_raw_tensor / encode_raw_tensor in serve/protocol.h,
// shared with the HTTP binary tensor extension.

// A ModelInferRequest as the protocol's InferRequest: raw_input_contents (one per input) or typed
// contents (the field of the input's datatype), shapes checked against the element counts, request
// parameter `timeout` (int64 microseconds). InvalidArgument naming the input or parameter.
InferRequest infer_request_from_grpc(const inference::ModelInferRequest& message);
// An InferResponse as a ModelInferResponse: raw_output_contents (what Triton sends, and what
// tritonclient reads) or, with `typed`, each output's typed contents.
void infer_response_to_grpc(const InferResponse& response, bool typed, inference::ModelInferResponse& message);

class GrpcServer {
 public:
  // Binds host:port and starts serving `server`'s repository. IoError when the port cannot be bound
  // (no SO_REUSEPORT: a second server never silently shares a port).
  GrpcServer(InferenceServer& server, GrpcOptions options);
  ~GrpcServer();
  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  int port() const { return port_; }
  // Stops taking RPCs and lets those in flight finish (cancelling what is left after `grace`); open
  // streams end once the requests they hold are answered. Idempotent.
  void shutdown(std::chrono::milliseconds grace = std::chrono::seconds(60));

 private:
  class Service;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace scalebert::serve
