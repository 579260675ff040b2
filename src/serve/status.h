// Errors of the inference server that carry their HTTP status: a model or version that does not
// exist (404) and a server that cannot take the request now (503: queue full, model not ready,
// request timed out, shutting down). Every other ScaleBERT error maps by type (see http_status).
#pragma once

#include "core/error.h"

namespace scalebert::serve {

class NotFound : public Error {
 public:
  using Error::Error;
};

class Unavailable : public Error {
 public:
  using Error::Error;
};

// HTTP status of an exception escaping a handler: InvalidArgument and FormatError (the caller's
// input) 400, NotFound 404, Unavailable 503, anything else 500.
int http_status(const std::exception& error);

}  // namespace scalebert::serve
