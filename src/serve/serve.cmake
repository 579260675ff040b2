# The inference server's HTTP layer: cpp-httplib from Debian (libcpp-httplib-dev). Debian ships it
# split into a header and a shared library built with OpenSSL, zlib and Brotli support, so the
# header must be compiled with the same CPPHTTPLIB_* definitions: pkg-config's Cflags carry them.
find_package(PkgConfig REQUIRED)
pkg_check_modules(CPPHTTPLIB IMPORTED_TARGET cpp-httplib>=0.11)
if(NOT CPPHTTPLIB_FOUND)
  message(FATAL_ERROR "The inference server (src/serve) needs cpp-httplib >= 0.11: "
                      "apt-get install libcpp-httplib-dev (scripts/setup.sh installs it)")
endif()
target_link_libraries(scalebert_lib PUBLIC PkgConfig::CPPHTTPLIB)
