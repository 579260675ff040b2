// The KServe v2 inference request and response bodies, with Triton's binary tensor data extension:
// a body may be a JSON header of Inference-Header-Content-Length bytes followed by the raw tensor
// bytes of every input whose parameters carry "binary_data_size", in input order. Numbers are
// little-endian and row-major; a BYTES element is a 4-byte little-endian length and its bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "serve/model_config.h"

namespace scalebert::serve {

// One input or output tensor, its elements held by kind: every integer and BOOL type as int64,
// FP16/BF16/FP32/FP64 as float, BYTES as strings.
struct WireTensor {
  std::string name;
  DataType datatype = DataType::kFp32;
  std::vector<int64_t> shape;
  std::vector<int64_t> ints;
  std::vector<float> floats;
  std::vector<std::string> strings;
  bool binary = false;  // outputs: send as binary data

  int64_t numel() const;
};

struct RequestedOutput {
  std::string name;
  bool binary = false;
};

struct InferRequest {
  std::string id;
  std::vector<WireTensor> inputs;
  std::vector<RequestedOutput> outputs;  // empty: every output of the model
  bool binary_output_default = false;    // parameters.binary_data_output
  int64_t timeout_microseconds = 0;      // parameters.timeout; 0 = the model's default
  nlohmann::json parameters = nlohmann::json::object();

  const WireTensor* find_input(std::string_view name) const;
};

// Raw tensor bytes <-> WireTensor elements, the one codec of HTTP binary data (Triton's binary
// tensor extension) and gRPC raw_input_contents/raw_output_contents: little-endian, row-major; a
// BYTES element is a 4-byte little-endian length then its bytes. decode_raw_tensor appends to
// `tensor` (whose name and datatype are set) and throws InvalidArgument naming the tensor when the
// bytes do not hold exactly `numel` elements of its datatype. encode_raw_tensor writes every
// datatype but FP16 (Unsupported).
void decode_raw_tensor(std::string_view bytes, int64_t numel, WireTensor& tensor);
std::string encode_raw_tensor(const WireTensor& tensor);

// Parses a request body. `header_length` is the Inference-Header-Content-Length value when the
// header was sent. Throws InvalidArgument naming the field or input for anything malformed: JSON,
// datatype, shape against the element count, binary sizes, trailing bytes.
InferRequest parse_infer_request(std::string_view body, std::optional<size_t> header_length);

struct InferResponse {
  std::string model_name;
  std::string model_version;
  std::string id;
  std::vector<WireTensor> outputs;
};

struct EncodedResponse {
  std::string body;
  std::optional<size_t> header_length;  // set when binary tensors follow the JSON header
};

EncodedResponse encode_infer_response(const InferResponse& response);

// Decoding a response (for clients: the tests and the load generator).
InferResponse parse_infer_response(std::string_view body, std::optional<size_t> header_length);

// Encoding a request (for clients). Inputs with `binary` set go as binary data.
EncodedResponse encode_infer_request(const InferRequest& request);

}  // namespace scalebert::serve
