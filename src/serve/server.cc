// HTTP routes of the KServe v2 protocol (and Triton's extensions) over cpp-httplib; every handler
// turns exceptions into {"error": "..."} with the status of status.h, so no request can take the
// server down.
#include "serve/server.h"

#include <httplib.h>

#include <charconv>

#include "core/error.h"
#include "serve/grpc_server.h"
#include "serve/status.h"

namespace scalebert::serve {

namespace {

using Json = nlohmann::json;

constexpr const char* kJson = "application/json";

void send_json(httplib::Response& response, const Json& body, int status = 200) {
  response.status = status;
  response.set_content(body.dump(-1, ' ', false, Json::error_handler_t::replace), kJson);
}

void send_error(httplib::Response& response, int status, std::string_view message) {
  send_json(response, {{"error", message}}, status);
}

std::optional<int64_t> version_of(const httplib::Request& request, size_t group) {
  if (request.matches.size() <= group || !request.matches[group].matched) return std::nullopt;
  const std::string text = request.matches[group].str();
  int64_t version = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), version);
  if (error != std::errc() || end != text.data() + text.size()) {
    throw NotFound(str_cat("no version \"", text, "\""));
  }
  return version;
}

// Runs `body`; an escaping exception becomes a JSON error with its HTTP status.
template <typename Body>
httplib::Server::Handler guarded(Body body) {
  return [body](const httplib::Request& request, httplib::Response& response) {
    try {
      body(request, response);
    } catch (const std::exception& error) {
      send_error(response, http_status(error), error.what());
    } catch (...) {
      send_error(response, 500, "unknown error");
    }
  };
}

// httplib listens with a backlog of 5: a burst of new connections (32 clients starting at once)
// overflows it, and each dropped SYN costs the client a 1 s retransmission. Linux lets listen()
// be called again on a listening socket to raise the backlog.
class HttpServer : public httplib::Server {
 public:
  void raise_backlog(int backlog) { ::listen(svr_sock_, backlog); }
};

constexpr const char* kModelPath = R"(/v2/models/([^/]+)(?:/versions/([0-9]{1,18}))?)";

}  // namespace

InferenceServer::InferenceServer(ServerOptions options) : options_(std::move(options)) {
  repository_ = std::make_unique<ModelRepository>(options_.model_repository, options_.limits);
}

InferenceServer::~InferenceServer() { stop(); }

bool InferenceServer::ready() const {
  if (!loaded_.load() || stopping_.load()) return false;
  return !options_.strict_readiness || repository_->all_ready();
}

std::string InferenceServer::metrics_text() const {
  std::string samples;
  for (const auto& model : repository_->loaded()) {
    model->stats().render(samples, model->config().name, std::to_string(model->version()));
  }
  return prometheus_text(samples);
}

void InferenceServer::add_routes() {
  httplib::Server& http = *http_;
  http.Get("/v2/health/live", guarded([this](const httplib::Request&, httplib::Response& response) {
    send_json(response, {{"live", !stopped_.load()}}, stopped_.load() ? 503 : 200);
  }));
  http.Get("/v2/health/ready", guarded([this](const httplib::Request&, httplib::Response& response) {
    const bool is_ready = ready();
    send_json(response, {{"ready", is_ready}}, is_ready ? 200 : 503);
  }));
  http.Get("/v2", guarded([](const httplib::Request&, httplib::Response& response) {
    send_json(response, {{"name", "scalebert"},
                         {"version", "0.1.0"},
                         {"extensions", {"binary_tensor_data", "model_configuration", "model_repository",
                                         "statistics", "schedule_policy"}}});
  }));
  http.Get("/v2/models/stats", guarded([this](const httplib::Request&, httplib::Response& response) {
    Json stats = Json::array();
    for (const auto& model : repository_->loaded()) {
      stats.push_back(model->stats().to_json(model->config().name, std::to_string(model->version())));
    }
    send_json(response, {{"model_stats", stats}});
  }));
  http.Get(std::string(kModelPath) + "/stats", guarded([this](const httplib::Request& request, httplib::Response& response) {
    const std::string name = request.matches[1].str();
    const auto version = version_of(request, 2);
    Json stats = Json::array();
    for (const auto& model : repository_->versions(name)) {
      if (version && model->version() != *version) continue;
      stats.push_back(model->stats().to_json(name, std::to_string(model->version())));
    }
    if (version && stats.empty()) throw NotFound(str_cat("model '", name, "' has no version ", *version));
    send_json(response, {{"model_stats", stats}});
  }));
  http.Get(std::string(kModelPath) + "/ready", guarded([this](const httplib::Request& request, httplib::Response& response) {
    const bool is_ready = !stopping_.load() && repository_->ready(request.matches[1].str(), version_of(request, 2));
    send_json(response, {{"name", request.matches[1].str()}, {"ready", is_ready}}, is_ready ? 200 : 400);
  }));
  http.Get(std::string(kModelPath) + "/config", guarded([this](const httplib::Request& request, httplib::Response& response) {
    send_json(response, repository_->get(request.matches[1].str(), version_of(request, 2))->config().to_json());
  }));
  http.Get(kModelPath, guarded([this](const httplib::Request& request, httplib::Response& response) {
    const std::string name = request.matches[1].str();
    const auto model = repository_->get(name, version_of(request, 2));
    Json metadata = model->metadata();
    if (!request.matches[2].matched) {
      Json versions = Json::array();
      for (const auto& each : repository_->versions(name)) versions.push_back(std::to_string(each->version()));
      metadata["versions"] = versions;
    }
    send_json(response, metadata);
  }));
  http.Post(std::string(kModelPath) + "/infer", guarded([this](const httplib::Request& request, httplib::Response& response) {
    if (stopping_.load()) throw Unavailable("the server is shutting down");
    std::optional<size_t> header_length;
    if (request.has_header("Inference-Header-Content-Length")) {
      const std::string text = request.get_header_value("Inference-Header-Content-Length");
      size_t value = 0;
      const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
      check(error == std::errc() && end == text.data() + text.size(),
            "Inference-Header-Content-Length is not a number: \"", text, "\"");
      header_length = value;
    }
    const auto model = repository_->get(request.matches[1].str(), version_of(request, 2));
    const InferRequest parsed = parse_infer_request(request.body, header_length);
    const EncodedResponse encoded = encode_infer_response(model->infer(parsed));
    if (encoded.header_length) {
      response.set_header("Inference-Header-Content-Length", std::to_string(*encoded.header_length));
      response.set_content(encoded.body, "application/octet-stream");
    } else {
      response.set_content(encoded.body, kJson);
    }
  }));
  http.Post("/v2/repository/index", guarded([this](const httplib::Request& request, httplib::Response& response) {
    Json index = repository_->index();
    if (!request.body.empty()) {
      Json body;
      try {
        body = Json::parse(request.body);
      } catch (const Json::exception& error) {
        throw InvalidArgument(str_cat("malformed JSON: ", error.what()));
      }
      if (body.is_object() && body.value("ready", false)) {
        Json ready = Json::array();
        for (const Json& item : index) {
          if (item.value("state", "") == "READY") ready.push_back(item);
        }
        index = ready;
      }
    }
    send_json(response, index);
  }));
  http.Post(R"(/v2/repository/models/([^/]+)/load)", guarded([this](const httplib::Request& request, httplib::Response& response) {
    if (stopping_.load()) throw Unavailable("the server is shutting down");
    repository_->load(request.matches[1].str());
    send_json(response, Json::object());
  }));
  http.Post(R"(/v2/repository/models/([^/]+)/unload)", guarded([this](const httplib::Request& request, httplib::Response& response) {
    repository_->unload(request.matches[1].str());
    send_json(response, Json::object());
  }));

  // Statuses set by the library itself (404 no route, 413 body too large, 400 unreadable request)
  // get a JSON body too.
  http.set_error_handler(httplib::Server::HandlerWithResponse(
      [](const httplib::Request&, httplib::Response& response) {
        if (!response.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        std::string message = str_cat("HTTP ", response.status);
        if (response.status == 400) message = "malformed HTTP request, or its body was not received in time";
        if (response.status == 404) message = "no such endpoint";
        if (response.status == 405) message = "method not allowed";
        if (response.status == 413) message = "request body too large";
        if (response.status == 414) message = "request URI too long";
        send_error(response, response.status, message);
        return httplib::Server::HandlerResponse::Handled;
      }));
  http.set_exception_handler([](const httplib::Request&, httplib::Response& response, std::exception_ptr) {
    send_error(response, 500, "internal error");
  });
}

// SO_REUSEADDR only: httplib's default also sets SO_REUSEPORT, with which a second server on the
// same port binds without error and silently takes half of the connections.
static void exclusive_port(socket_t socket) {
  int yes = 1;
  setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
}

void InferenceServer::start() {
  http_ = std::make_unique<HttpServer>();
  http_->set_socket_options(exclusive_port);
  const int threads = options_.http_threads;
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  http_->set_payload_max_length(options_.max_body_bytes);
  const auto timeout = options_.read_timeout;
  http_->set_read_timeout(timeout.count() / 1000, (timeout.count() % 1000) * 1000);
  http_->set_write_timeout(timeout.count() / 1000, (timeout.count() % 1000) * 1000);
  http_->set_keep_alive_max_count(100000);
  http_->set_keep_alive_timeout(5);
  http_->set_tcp_nodelay(true);
  add_routes();
  if (options_.http_port == 0) {
    http_port_ = http_->bind_to_any_port(options_.host);
    check<IoError>(http_port_ > 0, "cannot bind HTTP to ", options_.host, " (any port)");
  } else {
    check<IoError>(http_->bind_to_port(options_.host, options_.http_port), "cannot bind HTTP to ", options_.host, ":",
                   options_.http_port, " (in use?)");
    http_port_ = options_.http_port;
  }
  static_cast<HttpServer&>(*http_).raise_backlog(1024);
  if (options_.metrics_port >= 0) {
    metrics_ = std::make_unique<httplib::Server>();
    metrics_->set_socket_options(exclusive_port);
    metrics_->new_task_queue = [] { return new httplib::ThreadPool(2); };
    metrics_->Get("/metrics", [this](const httplib::Request&, httplib::Response& response) {
      response.set_content(metrics_text(), "text/plain; version=0.0.4");
    });
    if (options_.metrics_port == 0) {
      metrics_port_ = metrics_->bind_to_any_port(options_.host);
      check<IoError>(metrics_port_ > 0, "cannot bind metrics to ", options_.host, " (any port)");
    } else {
      check<IoError>(metrics_->bind_to_port(options_.host, options_.metrics_port), "cannot bind metrics to ",
                     options_.host, ":", options_.metrics_port, " (in use?)");
      metrics_port_ = options_.metrics_port;
    }
    metrics_thread_ = std::thread([this] { metrics_->listen_after_bind(); });
  }
  if (options_.grpc_port >= 0) {
    grpc_ = std::make_unique<GrpcServer>(*this, GrpcOptions{options_.host, options_.grpc_port, options_.max_body_bytes,
                                                            options_.http_threads});
    grpc_port_ = grpc_->port();
  }
  http_thread_ = std::thread([this] { http_->listen_after_bind(); });
  repository_->load_all();
  loaded_.store(true);
}

void InferenceServer::stop() {
  if (stopped_.exchange(true)) return;
  stopping_.store(true);
  // httplib's stop() closes the listening socket and joins its pool, which finishes the requests
  // being served; keep-alive connections close after their current request.
  if (http_) {
    http_->stop();
    if (http_thread_.joinable()) http_thread_.join();
  }
  if (grpc_) grpc_->shutdown();  // likewise: RPCs in flight finish, new ones are refused
  if (repository_) repository_->unload_all();
  if (metrics_) {
    metrics_->stop();
    if (metrics_thread_.joinable()) metrics_thread_.join();
  }
}

}  // namespace scalebert::serve
