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

# The gRPC front end (src/serve/grpc_server.cc): Debian's gRPC C++ (libgrpc++-dev) and its protoc
# plugin (protobuf-compiler-grpc). protoc compiles src/serve/proto/*.proto (KServe v2
# GRPCInferenceService and Triton's ModelConfig subset) into the build tree; the generated code is
# its own target, built without our warning flags, its headers included as SYSTEM.
pkg_check_modules(GRPCPP IMPORTED_TARGET grpc++>=1.30)
find_program(SCALEBERT_GRPC_CPP_PLUGIN grpc_cpp_plugin)
find_package(Protobuf)
if(NOT GRPCPP_FOUND OR NOT SCALEBERT_GRPC_CPP_PLUGIN OR NOT Protobuf_FOUND OR NOT Protobuf_PROTOC_EXECUTABLE)
  message(FATAL_ERROR "The inference server's gRPC endpoint (src/serve/grpc_server.cc) needs gRPC C++ >= 1.30, "
                      "its protoc plugin grpc_cpp_plugin and protoc: apt-get install libgrpc++-dev "
                      "protobuf-compiler-grpc protobuf-compiler libprotobuf-dev (scripts/setup.sh installs them). "
                      "Found: grpc++ '${GRPCPP_VERSION}', plugin '${SCALEBERT_GRPC_CPP_PLUGIN}', "
                      "protoc '${Protobuf_PROTOC_EXECUTABLE}'")
endif()
set(SCALEBERT_GRPC_PROTO_DIR ${CMAKE_SOURCE_DIR}/src/serve/proto)
set(SCALEBERT_GRPC_GEN_DIR ${CMAKE_BINARY_DIR}/grpc_proto)
file(MAKE_DIRECTORY ${SCALEBERT_GRPC_GEN_DIR})
set(SCALEBERT_GRPC_GENERATED
    ${SCALEBERT_GRPC_GEN_DIR}/model_config.pb.cc ${SCALEBERT_GRPC_GEN_DIR}/model_config.pb.h
    ${SCALEBERT_GRPC_GEN_DIR}/grpc_service.pb.cc ${SCALEBERT_GRPC_GEN_DIR}/grpc_service.pb.h
    ${SCALEBERT_GRPC_GEN_DIR}/grpc_service.grpc.pb.cc ${SCALEBERT_GRPC_GEN_DIR}/grpc_service.grpc.pb.h)
add_custom_command(
  OUTPUT ${SCALEBERT_GRPC_GENERATED}
  COMMAND ${Protobuf_PROTOC_EXECUTABLE} -I ${SCALEBERT_GRPC_PROTO_DIR}
          --cpp_out=${SCALEBERT_GRPC_GEN_DIR} --grpc_out=${SCALEBERT_GRPC_GEN_DIR}
          --plugin=protoc-gen-grpc=${SCALEBERT_GRPC_CPP_PLUGIN}
          ${SCALEBERT_GRPC_PROTO_DIR}/model_config.proto ${SCALEBERT_GRPC_PROTO_DIR}/grpc_service.proto
  DEPENDS ${SCALEBERT_GRPC_PROTO_DIR}/model_config.proto ${SCALEBERT_GRPC_PROTO_DIR}/grpc_service.proto
          ${SCALEBERT_GRPC_CPP_PLUGIN}
  COMMENT "protoc: KServe v2 GRPCInferenceService (src/serve/proto)"
  VERBATIM)
add_library(scalebert_grpc_proto STATIC ${SCALEBERT_GRPC_GENERATED})
target_include_directories(scalebert_grpc_proto SYSTEM PUBLIC ${SCALEBERT_GRPC_GEN_DIR})
# protobuf-lite, as train/proto: the .proto files say optimize_for = LITE_RUNTIME.
target_link_libraries(scalebert_grpc_proto PUBLIC protobuf::libprotobuf-lite PkgConfig::GRPCPP)
target_link_libraries(scalebert_lib PUBLIC scalebert_grpc_proto)
