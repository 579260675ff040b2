// Exception -> HTTP status for the server's handlers.
#include "serve/status.h"

namespace scalebert::serve {

int http_status(const std::exception& error) {
  if (dynamic_cast<const InvalidArgument*>(&error) != nullptr) return 400;
  if (dynamic_cast<const FormatError*>(&error) != nullptr) return 400;
  if (dynamic_cast<const NotFound*>(&error) != nullptr) return 404;
  if (dynamic_cast<const Unavailable*>(&error) != nullptr) return 503;
  return 500;
}

}  // namespace scalebert::serve
