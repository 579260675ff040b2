// KServe v2 request/response bodies: JSON with nlohmann::json, binary tensor data by hand (lengths
// checked before every read, so a lying header can never read past the body).
#include "serve/protocol.h"

#include <cstring>
#include <limits>

#include "core/dtype.h"
#include "core/error.h"

namespace scalebert::serve {

namespace {

// Elements a request may declare (about 2^31): keeps shape products far from overflow; the body
// size limit is the real bound.
constexpr int64_t kMaxElements = int64_t{1} << 31;

using Json = nlohmann::json;

int64_t checked_numel(const std::vector<int64_t>& shape, std::string_view name) {
  int64_t count = 1;
  for (int64_t dim : shape) {
    check(dim >= 0, "input '", name, "': negative dimension ", dim, " in its shape");
    if (dim != 0 && count > kMaxElements / dim) throw InvalidArgument(str_cat("input '", name, "': shape too large"));
    count *= dim;
  }
  return count;
}

bool is_integer_type(DataType type) {
  switch (type) {
    case DataType::kBool: case DataType::kUint8: case DataType::kInt8: case DataType::kInt16:
    case DataType::kInt32: case DataType::kInt64:
      return true;
    default:
      return false;
  }
}

// Appends the scalar elements of (possibly nested) JSON `data` to `tensor`.
void append_json_data(const Json& data, WireTensor& tensor, int depth) {
  check(depth < 32, "input '", tensor.name, "': data nested more than 32 deep");
  if (data.is_array()) {
    for (const Json& element : data) append_json_data(element, tensor, depth + 1);
    return;
  }
  const DataType type = tensor.datatype;
  if (type == DataType::kBytes) {
    check(data.is_string(), "input '", tensor.name, "': BYTES data must be strings, got ", data.type_name());
    tensor.strings.push_back(data.get<std::string>());
  } else if (type == DataType::kBool) {
    check(data.is_boolean(), "input '", tensor.name, "': BOOL data must be true/false, got ", data.type_name());
    tensor.ints.push_back(data.get<bool>() ? 1 : 0);
  } else if (is_integer_type(type)) {
    check(data.is_number_integer(), "input '", tensor.name, "': ", v2_name(type), " data must be integers, got ",
          data.is_number() ? data.dump() : std::string(data.type_name()));
    if (data.is_number_unsigned()) {
      const uint64_t value = data.get<uint64_t>();
      check(value <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), "input '", tensor.name,
            "': integer ", value, " out of range");
      tensor.ints.push_back(static_cast<int64_t>(value));
    } else {
      tensor.ints.push_back(data.get<int64_t>());
    }
  } else {
    check(data.is_number(), "input '", tensor.name, "': ", v2_name(type), " data must be numbers, got ",
          data.type_name());
    tensor.floats.push_back(data.get<float>());
  }
}

template <typename T>
T read_le(const char* bytes) {
  T value;
  std::memcpy(&value, bytes, sizeof(T));  // x86-64 and aarch64 Linux are little-endian
  return value;
}

template <typename T>
void append_le(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

const Json* member(const Json& object, const char* key) {
  const auto found = object.find(key);
  return found == object.end() ? nullptr : &*found;
}

std::vector<int64_t> parse_shape(const Json& object, std::string_view name) {
  const Json* shape = member(object, "shape");
  check(shape != nullptr && shape->is_array(), "input '", name, "': missing \"shape\" array");
  std::vector<int64_t> dims;
  for (const Json& dim : *shape) {
    check(dim.is_number_integer(), "input '", name, "': shape entries must be integers, got ", dim.dump());
    dims.push_back(dim.get<int64_t>());
  }
  return dims;
}

std::optional<int64_t> binary_size(const Json& object, std::string_view name) {
  const Json* parameters = member(object, "parameters");
  if (parameters == nullptr) return std::nullopt;
  check(parameters->is_object(), "'", name, "': \"parameters\" must be an object");
  const Json* size = member(*parameters, "binary_data_size");
  if (size == nullptr) return std::nullopt;
  check(size->is_number_integer() && size->get<int64_t>() >= 0, "'", name,
        "': binary_data_size must be a non-negative integer, got ", size->dump());
  return size->get<int64_t>();
}

bool bool_parameter(const Json& parameters, const char* key, bool fallback) {
  const Json* value = member(parameters, key);
  if (value == nullptr) return fallback;
  check(value->is_boolean(), "parameter ", key, " must be true or false, got ", value->dump());
  return value->get<bool>();
}

Json parse_json(std::string_view text) {
  try {
    return Json::parse(text);
  } catch (const Json::exception& error) {
    throw InvalidArgument(str_cat("malformed JSON: ", error.what()));
  }
}

// Splits a body into its JSON header and binary part.
std::pair<std::string_view, std::string_view> split_body(std::string_view body, std::optional<size_t> header_length) {
  if (!header_length) return {body, {}};
  check(*header_length <= body.size(), "Inference-Header-Content-Length ", *header_length, " exceeds the body's ",
        body.size(), " bytes");
  return {body.substr(0, *header_length), body.substr(*header_length)};
}

// Reads every tensor of a JSON array ("inputs" or "outputs") with its binary data from `binary`.
std::vector<WireTensor> parse_tensors(const Json& list, std::string_view& binary, const char* what) {
  check(list.is_array(), "\"", what, "\" must be an array");
  std::vector<WireTensor> tensors;
  for (const Json& item : list) {
    check(item.is_object(), "every entry of \"", what, "\" must be an object");
    WireTensor tensor;
    const Json* name = member(item, "name");
    check(name != nullptr && name->is_string(), "an entry of \"", what, "\" has no string \"name\"");
    tensor.name = name->get<std::string>();
    const Json* datatype = member(item, "datatype");
    check(datatype != nullptr && datatype->is_string(), "'", tensor.name, "': missing \"datatype\"");
    try {
      tensor.datatype = data_type_from_v2(datatype->get<std::string>());
    } catch (const InvalidArgument& error) {
      throw InvalidArgument(str_cat("'", tensor.name, "': ", error.what()));
    }
    tensor.shape = parse_shape(item, tensor.name);
    const int64_t numel = checked_numel(tensor.shape, tensor.name);
    if (const auto size = binary_size(item, tensor.name)) {
      check(static_cast<uint64_t>(*size) <= binary.size(), "'", tensor.name, "': binary_data_size ", *size,
            " exceeds the ", binary.size(), " binary bytes left in the body");
      check(member(item, "data") == nullptr, "'", tensor.name, "': both \"data\" and binary_data_size given");
      decode_raw_tensor(binary.substr(0, static_cast<size_t>(*size)), numel, tensor);
      binary.remove_prefix(static_cast<size_t>(*size));
      tensor.binary = true;
    } else {
      const Json* data = member(item, "data");
      check(data != nullptr, "'", tensor.name, "': no \"data\" and no binary_data_size");
      append_json_data(*data, tensor, 0);
      const int64_t count = tensor.datatype == DataType::kBytes ? static_cast<int64_t>(tensor.strings.size())
                            : is_integer_type(tensor.datatype)  ? static_cast<int64_t>(tensor.ints.size())
                                                                : static_cast<int64_t>(tensor.floats.size());
      check(count == numel, "'", tensor.name, "': shape ", Json(tensor.shape).dump(), " has ", numel,
            " elements but \"data\" has ", count);
    }
    tensors.push_back(std::move(tensor));
  }
  return tensors;
}

Json json_data(const WireTensor& tensor) {
  if (tensor.datatype == DataType::kBytes) return tensor.strings;
  if (is_integer_type(tensor.datatype)) {
    if (tensor.datatype == DataType::kBool) {
      Json out = Json::array();
      for (int64_t value : tensor.ints) out.push_back(value != 0);
      return out;
    }
    return tensor.ints;
  }
  return tensor.floats;
}

// JSON header plus binary tail of a list of tensors (a request's inputs or a response's outputs).
EncodedResponse encode_body(Json header, const char* key, const std::vector<WireTensor>& tensors) {
  std::string binary;
  Json list = Json::array();
  for (const WireTensor& tensor : tensors) {
    Json item = {{"name", tensor.name}, {"datatype", v2_name(tensor.datatype)}, {"shape", tensor.shape}};
    if (tensor.binary) {
      const std::string bytes = encode_raw_tensor(tensor);
      item["parameters"] = {{"binary_data_size", bytes.size()}};
      binary += bytes;
    } else {
      item["data"] = json_data(tensor);
    }
    list.push_back(std::move(item));
  }
  header[key] = std::move(list);
  EncodedResponse encoded;
  encoded.body = header.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (!binary.empty()) {
    encoded.header_length = encoded.body.size();
    encoded.body += binary;
  }
  return encoded;
}

}  // namespace

int64_t WireTensor::numel() const {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  return count;
}

const WireTensor* InferRequest::find_input(std::string_view input_name) const {
  for (const WireTensor& tensor : inputs) {
    if (tensor.name == input_name) return &tensor;
  }
  return nullptr;
}

InferRequest parse_infer_request(std::string_view body, std::optional<size_t> header_length) {
  auto [header, binary] = split_body(body, header_length);
  const Json json = parse_json(header);
  check(json.is_object(), "the request must be a JSON object");
  InferRequest request;
  if (const Json* id = member(json, "id")) {
    check(id->is_string(), "\"id\" must be a string");
    request.id = id->get<std::string>();
  }
  if (const Json* parameters = member(json, "parameters")) {
    check(parameters->is_object(), "\"parameters\" must be an object");
    request.parameters = *parameters;
    request.binary_output_default = bool_parameter(*parameters, "binary_data_output", false);
    if (const Json* timeout = member(*parameters, "timeout")) {
      check(timeout->is_number_integer() && timeout->get<int64_t>() >= 0,
            "parameter timeout must be a non-negative integer (microseconds), got ", timeout->dump());
      request.timeout_microseconds = timeout->get<int64_t>();
    }
    for (const char* unsupported : {"sequence_id", "priority"}) {
      check(member(*parameters, unsupported) == nullptr, "parameter ", unsupported, " is not supported");
    }
  }
  const Json* inputs = member(json, "inputs");
  check(inputs != nullptr, "the request has no \"inputs\"");
  request.inputs = parse_tensors(*inputs, binary, "inputs");
  check(!request.inputs.empty(), "the request has no inputs");
  for (size_t i = 0; i < request.inputs.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      check(request.inputs[i].name != request.inputs[j].name, "input '", request.inputs[i].name, "' given twice");
    }
  }
  check(binary.empty(), binary.size(), " bytes of binary data after the last binary input");
  if (const Json* outputs = member(json, "outputs")) {
    check(outputs->is_array(), "\"outputs\" must be an array");
    for (const Json& item : *outputs) {
      check(item.is_object(), "every entry of \"outputs\" must be an object");
      const Json* name = member(item, "name");
      check(name != nullptr && name->is_string(), "an entry of \"outputs\" has no string \"name\"");
      RequestedOutput output{name->get<std::string>(), request.binary_output_default};
      if (const Json* parameters = member(item, "parameters")) {
        check(parameters->is_object(), "output '", output.name, "': \"parameters\" must be an object");
        output.binary = bool_parameter(*parameters, "binary_data", output.binary);
        check(member(*parameters, "classification") == nullptr, "output '", output.name,
              "': the classification extension is not supported (the model returns labels itself)");
        check(member(*parameters, "shared_memory_region") == nullptr, "output '", output.name,
              "': shared memory is not supported");
      }
      request.outputs.push_back(std::move(output));
    }
  }
  return request;
}

EncodedResponse encode_infer_response(const InferResponse& response) {
  Json header = {{"model_name", response.model_name}, {"model_version", response.model_version}};
  if (!response.id.empty()) header["id"] = response.id;
  return encode_body(std::move(header), "outputs", response.outputs);
}

InferResponse parse_infer_response(std::string_view body, std::optional<size_t> header_length) {
  auto [header, binary] = split_body(body, header_length);
  const Json json = parse_json(header);
  check(json.is_object(), "the response must be a JSON object");
  InferResponse response;
  response.model_name = json.value("model_name", "");
  response.model_version = json.value("model_version", "");
  response.id = json.value("id", "");
  if (const Json* outputs = member(json, "outputs")) response.outputs = parse_tensors(*outputs, binary, "outputs");
  return response;
}

EncodedResponse encode_infer_request(const InferRequest& request) {
  Json header = Json::object();
  if (!request.id.empty()) header["id"] = request.id;
  Json parameters = request.parameters.is_object() ? request.parameters : Json::object();
  if (request.binary_output_default) parameters["binary_data_output"] = true;
  if (request.timeout_microseconds > 0) parameters["timeout"] = request.timeout_microseconds;
  if (!parameters.empty()) header["parameters"] = parameters;
  if (!request.outputs.empty()) {
    Json outputs = Json::array();
    for (const RequestedOutput& output : request.outputs) {
      outputs.push_back({{"name", output.name}, {"parameters", {{"binary_data", output.binary}}}});
    }
    header["outputs"] = outputs;
  }
  return encode_body(std::move(header), "inputs", request.inputs);
}

void decode_raw_tensor(std::string_view bytes, int64_t numel, WireTensor& tensor) {
  const DataType type = tensor.datatype;
  if (type == DataType::kBytes) {
    size_t pos = 0;
    while (pos < bytes.size()) {
      check(bytes.size() - pos >= 4, "input '", tensor.name, "': truncated BYTES element length at byte ", pos,
            " of its ", bytes.size(), " raw bytes");
      const uint32_t length = read_le<uint32_t>(bytes.data() + pos);
      pos += 4;
      check(length <= bytes.size() - pos, "input '", tensor.name, "': BYTES element ", tensor.strings.size(), " of ",
            length, " bytes overruns its ", bytes.size(), " raw bytes");
      tensor.strings.emplace_back(bytes.substr(pos, length));
      pos += length;
    }
    check(static_cast<int64_t>(tensor.strings.size()) == numel, "input '", tensor.name, "': raw contents hold ",
          tensor.strings.size(), " BYTES elements but the shape has ", numel);
    return;
  }
  const size_t size = element_size(type);
  check(bytes.size() == static_cast<size_t>(numel) * size, "input '", tensor.name, "': ", bytes.size(),
        " raw bytes do not match shape (", numel, " elements x ", size, " bytes of ", v2_name(type), ")");
  const char* data = bytes.data();
  for (int64_t i = 0; i < numel; ++i, data += size) {
    switch (type) {
      case DataType::kBool: case DataType::kUint8: tensor.ints.push_back(read_le<uint8_t>(data)); break;
      case DataType::kInt8: tensor.ints.push_back(read_le<int8_t>(data)); break;
      case DataType::kInt16: tensor.ints.push_back(read_le<int16_t>(data)); break;
      case DataType::kInt32: tensor.ints.push_back(read_le<int32_t>(data)); break;
      case DataType::kInt64: tensor.ints.push_back(read_le<int64_t>(data)); break;
      case DataType::kFp16: tensor.floats.push_back(f16_to_float(read_le<uint16_t>(data))); break;
      case DataType::kBf16: tensor.floats.push_back(bf16_to_float(BFloat16{read_le<uint16_t>(data)})); break;
      case DataType::kFp32: tensor.floats.push_back(read_le<float>(data)); break;
      case DataType::kFp64: tensor.floats.push_back(static_cast<float>(read_le<double>(data))); break;
      case DataType::kBytes: break;
    }
  }
}

std::string encode_raw_tensor(const WireTensor& tensor) {
  std::string out;
  switch (tensor.datatype) {
    case DataType::kBytes:
      for (const std::string& element : tensor.strings) {
        append_le(out, static_cast<uint32_t>(element.size()));
        out += element;
      }
      break;
    case DataType::kBool: case DataType::kUint8:
      for (int64_t value : tensor.ints) append_le(out, static_cast<uint8_t>(value));
      break;
    case DataType::kInt8:
      for (int64_t value : tensor.ints) append_le(out, static_cast<int8_t>(value));
      break;
    case DataType::kInt16:
      for (int64_t value : tensor.ints) append_le(out, static_cast<int16_t>(value));
      break;
    case DataType::kInt32:
      for (int64_t value : tensor.ints) append_le(out, static_cast<int32_t>(value));
      break;
    case DataType::kInt64:
      out.append(reinterpret_cast<const char*>(tensor.ints.data()), tensor.ints.size() * sizeof(int64_t));
      break;
    case DataType::kFp32:
      out.append(reinterpret_cast<const char*>(tensor.floats.data()), tensor.floats.size() * sizeof(float));
      break;
    case DataType::kFp64:
      for (float value : tensor.floats) append_le(out, static_cast<double>(value));
      break;
    case DataType::kBf16:
      for (float value : tensor.floats) append_le(out, float_to_bf16(value));
      break;
    case DataType::kFp16:
      throw Unsupported(str_cat("raw FP16 encoding of output '", tensor.name, "'"));
  }
  return out;
}

}  // namespace scalebert::serve
