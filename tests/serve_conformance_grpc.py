#!/usr/bin/env python3
"""Conformance of `scalebert serve`'s gRPC endpoint with an unchanged standard KServe v2 client (tritonclient.grpc).

First compares the service definition (src/serve/proto, compiled by protoc into a descriptor set)
with the descriptors tritonclient ships: every message, field (name, number, type, repeated,
oneof), enum value and RPC that ScaleBERT declares must be Triton's. Then builds the same model
repository as serve_conformance.py (MiniLM and the tiny fixtures, serve_conformance_common.py),
starts the server with gRPC on a free loopback port, and checks with tritonclient.grpc: health,
server and model metadata, config, repository index/unload/load, statistics, inference (BYTES text
and INT64 token tensors, raw contents as tritonclient sends them) against transformers, concurrent
async requests, error status codes, streaming (start_stream / async_stream_infer / stop_stream:
every answer under its request id, an error answer that leaves the stream open, the stream's
requests batched together), and that SIGTERM drains and exits 0 with a stream still open. Every
wait is bounded.

usage: .venv/bin/python tests/serve_conformance_grpc.py --binary build/scalebert --fixtures build/fixtures [--protoc protoc]
"""
import argparse
import os
import queue
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import tritonclient.grpc as grpcclient
from google.protobuf import descriptor_pb2, descriptor_pool
from tritonclient.grpc import model_config_pb2, service_pb2  # noqa: F401 (registers Triton's descriptors)
from tritonclient.utils import InferenceServerException

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_conformance_common import (CLASSIFICATION_TEXTS, ROOT, TWEETS, check, classification_reference,  # noqa: E402
                                      free_port, minilm_path, minilm_reference, serving, wait_until_ready)


def compare_descriptors(protoc):
    """Every element of ScaleBERT's .proto files against tritonclient's compiled descriptors."""
    proto_dir = os.path.join(ROOT, "src", "serve", "proto")
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "descriptors.pb")
        subprocess.run([protoc, "-I", proto_dir, f"--descriptor_set_out={out}", "grpc_service.proto",
                        "model_config.proto"], check=True, timeout=60)
        ours = descriptor_pb2.FileDescriptorSet.FromString(open(out, "rb").read())
    pool = descriptor_pool.Default()
    problems, count = [], 0
    label_repeated = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED

    def compare_message(message, prefix):
        nonlocal count
        name = f"{prefix}.{message.name}"
        theirs = pool.FindMessageTypeByName(name)
        for field in message.field:
            count += 1
            other = theirs.fields_by_name.get(field.name)
            if other is None:
                problems.append(f"{name}.{field.name}: Triton has no such field")
                continue
            ours_key = (field.number, field.type, field.label == label_repeated, field.HasField("oneof_index"))
            theirs_key = (other.number, other.type, other.is_repeated if hasattr(other, "is_repeated") else
                          other.label == other.LABEL_REPEATED, other.containing_oneof is not None)
            if ours_key != theirs_key:
                problems.append(f"{name}.{field.name}: (number, type, repeated, oneof) ours {ours_key}, Triton's {theirs_key}")
            other_type = other.message_type or other.enum_type
            if other_type is not None and field.type_name != "." + other_type.full_name:
                problems.append(f"{name}.{field.name}: type {field.type_name}, Triton's .{other_type.full_name}")
        for nested in message.nested_type:
            compare_message(nested, name)
        for enum in message.enum_type:
            compare_enum(enum, name)

    def compare_enum(enum, prefix):
        nonlocal count
        theirs = pool.FindEnumTypeByName(f"{prefix}.{enum.name}")
        for value in enum.value:
            count += 1
            other = theirs.values_by_name.get(value.name)
            if other is None or other.number != value.number:
                problems.append(f"enum {prefix}.{enum.name}.{value.name} = {value.number}")

    for file in ours.file:
        for message in file.message_type:
            compare_message(message, file.package)
        for enum in file.enum_type:
            compare_enum(enum, file.package)
        for service in file.service:
            theirs = pool.FindServiceByName(f"{file.package}.{service.name}")
            for method in service.method:
                count += 1
                other = theirs.methods_by_name.get(method.name)
                if (other is None or method.input_type != "." + other.input_type.full_name
                        or method.output_type != "." + other.output_type.full_name
                        or method.client_streaming != other.client_streaming
                        or method.server_streaming != other.server_streaming):
                    problems.append(f"rpc {service.name}.{method.name}")
    check(not problems and count > 150, f"src/serve/proto matches tritonclient's descriptors ({count} elements): "
          f"{problems or 'identical'}")


def text_input(text):
    tensor = grpcclient.InferInput("text", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[text.encode()]], dtype=object))
    return tensor


def expect_error(action, code, fragment, what):
    try:
        action()
    except InferenceServerException as error:
        check(error.status() == f"StatusCode.{code}" and fragment in error.message(),
              f"{what}: {error.status()} {error.message()}")
        return
    check(False, f"{what}: refused")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--fixtures", required=True)
    parser.add_argument("--protoc", default=shutil.which("protoc") or "protoc")
    args = parser.parse_args()
    compare_descriptors(args.protoc)

    minilm = minilm_path()
    http_port, grpc_port = free_port(), free_port()
    with serving(args.binary, args.fixtures, minilm, "scalebert_conformance_grpc_",
                 ["--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", "-1"]):
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        wait_until_ready(lambda: client.is_server_ready(client_timeout=2))
        check(client.is_server_live() and client.is_server_ready(), "gRPC: server live and ready")
        metadata = client.get_server_metadata()
        check(metadata.name == "scalebert" and "model_repository" in metadata.extensions, f"server metadata {metadata.name}")
        model_metadata = client.get_model_metadata("minilm")
        first = model_metadata.inputs[0]
        check((first.name, first.datatype, list(first.shape)) == ("text", "BYTES", [-1, 1])
              and list(model_metadata.versions) == ["1"], "model metadata")
        config = client.get_model_config("minilm").config
        check(config.max_batch_size == 32 and config.instance_group[0].count == 2
              and model_config_pb2.DataType.Name(config.input[0].data_type) == "TYPE_STRING"
              and config.dynamic_batching.default_queue_policy.max_queue_size == 512
              and config.parameters["task"].string_value == "embeddings", "model config (Triton's ModelConfig)")
        config_json = client.get_model_config("minilm", as_json=True)["config"]
        check(config_json["output"][0]["dims"] == ["384"], "model config as JSON")
        index = client.get_model_repository_index().models
        check(sorted(model.name for model in index) == ["minilm", "ner", "qa", "sentiment"]
              and all(model.state == "READY" for model in index), "repository index")

        # MiniLM embeddings against transformers + sentence-transformers pooling (BYTES, raw contents).
        batch, hidden, expected = minilm_reference(minilm, TWEETS)
        text = grpcclient.InferInput("text", [len(TWEETS), 1], "BYTES")
        text.set_data_from_numpy(np.array([[t.encode()] for t in TWEETS], dtype=object))
        result = client.infer("minilm", [text], outputs=[grpcclient.InferRequestedOutput("embeddings")],
                              request_id="tweets", client_timeout=60)
        got = result.as_numpy("embeddings")
        check(got.shape == expected.shape and np.abs(got - expected).max() < 1e-4,
              f"MiniLM embeddings vs transformers: max diff {np.abs(got - expected).max():.2e}")
        check(result.get_response().id == "tweets" and result.get_response().model_version == "1", "response id and version")
        # Token tensors (INT64): last_hidden_state at the kept positions.
        inputs = []
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            tensor = grpcclient.InferInput(name, list(batch[name].shape), "INT64")
            tensor.set_data_from_numpy(batch[name].numpy().astype(np.int64))
            inputs.append(tensor)
        result = client.infer("minilm", inputs, outputs=[grpcclient.InferRequestedOutput("last_hidden_state")],
                              client_timeout=60)
        got = result.as_numpy("last_hidden_state")
        kept = batch["attention_mask"].numpy().astype(bool)
        difference = np.abs(got[kept] - hidden.numpy()[kept]).max()
        check(difference < 1e-4, f"MiniLM last_hidden_state from INT64 token tensors vs transformers: max diff {difference:.2e}")

        # Classification: logits against transformers, labels (BYTES outputs) from id2label.
        logits, labels = classification_reference(args.fixtures, CLASSIFICATION_TEXTS)
        text = grpcclient.InferInput("text", [2, 1], "BYTES")
        text.set_data_from_numpy(np.array([[t.encode()] for t in CLASSIFICATION_TEXTS], dtype=object))
        result = client.infer("sentiment", [text])  # no outputs named: every output
        check(np.abs(result.as_numpy("logits") - logits).max() < 1e-4, "classification logits vs transformers")
        check([v[0].decode() for v in result.as_numpy("label")] == labels, f"labels {labels}")
        check(list(result.as_numpy("label_id")[:, 0]) == list(logits.argmax(-1)), "label ids (INT64 output)")

        # NER entities and a QA answer come back as BYTES.
        text = grpcclient.InferInput("text", [1, 1], "BYTES")
        text.set_data_from_numpy(np.array([[b"bank revenue rose usd 5 million"]], dtype=object))
        entities = client.infer("ner", [text]).as_numpy("entities")
        check(entities.shape == (1, 1) and entities[0, 0].decode().startswith("["), f"NER entities {entities[0, 0][:80]}")
        question = grpcclient.InferInput("question", [1, 1], "BYTES")
        question.set_data_from_numpy(np.array([[b"what rose?"]], dtype=object))
        context = grpcclient.InferInput("context", [1, 1], "BYTES")
        context.set_data_from_numpy(np.array([[b"bank revenue rose in the quarter"]], dtype=object))
        answer = client.infer("qa", [question, context])
        check(answer.as_numpy("answer").shape == (1, 1) and answer.as_numpy("score").dtype == np.float32,
              f"QA answer {answer.as_numpy('answer')[0, 0]!r}")

        # Concurrent async requests (one batcher): each gets its own answer.
        results = queue.Queue()
        singles = [np.array([[t.encode()]], dtype=object) for t in TWEETS * 3]
        for i, single in enumerate(singles):
            tensor = grpcclient.InferInput("text", [1, 1], "BYTES")
            tensor.set_data_from_numpy(single)
            client.async_infer("minilm", [tensor], callback=lambda result, error, i=i: results.put((i, result, error)),
                               outputs=[grpcclient.InferRequestedOutput("embeddings")], client_timeout=60)
        worst = 0.0
        for _ in singles:
            i, result, error = results.get(timeout=60)
            assert error is None, error
            worst = max(worst, float(np.abs(result.as_numpy("embeddings")[0] - expected[i % len(TWEETS)]).max()))
        check(worst < 1e-4, f"{len(singles)} concurrent async requests, each its own answer: max diff {worst:.2e}")

        # Errors reach the client as InferenceServerException with the gRPC status.
        bad = grpcclient.InferInput("text", [1, 1], "INT64")
        bad.set_data_from_numpy(np.array([[1]], dtype=np.int64))
        expect_error(lambda: client.infer("minilm", [bad]), "INVALID_ARGUMENT", "the model takes BYTES", "wrong datatype")
        bad = grpcclient.InferInput("text", [1], "BYTES")
        bad.set_data_from_numpy(np.array([b"a"], dtype=object))
        expect_error(lambda: client.infer("minilm", [bad]), "INVALID_ARGUMENT", "shape has 1 dimensions", "wrong shape")
        expect_error(lambda: client.infer("nope", [text]), "NOT_FOUND", "unknown model 'nope'", "unknown model")
        expect_error(lambda: client.infer("minilm", [text], model_version="9"), "NOT_FOUND", "version", "unknown version")
        expect_error(lambda: client.get_model_metadata("nope"), "NOT_FOUND", "nope", "metadata of an unknown model")

        stats = client.get_inference_statistics("minilm").model_stats[0]
        # Two batched requests of every tweet, then one request per async single.
        check(stats.inference_count == 2 * len(TWEETS) + len(singles)
              and stats.inference_stats.success.count == 2 + len(singles),
              f"statistics: inference_count {stats.inference_count}, success {stats.inference_stats.success.count}")
        client.unload_model("qa")
        check(not client.is_model_ready("qa"), "unload")
        client.load_model("qa")
        check(client.is_model_ready("qa"), "load")

        # Streaming: every request answered once under its id, an error in the middle answered with
        # its message while the stream goes on, and the stream's requests batched together.
        answers = queue.Queue()
        client.start_stream(callback=lambda result, error: answers.put((result, error)), stream_timeout=120)
        before = client.get_inference_statistics("minilm").model_stats[0]
        streamed = TWEETS * 8
        for i, tweet in enumerate(streamed):
            client.async_stream_infer("minilm", [text_input(tweet)], request_id=f"tweet-{i}",
                                      outputs=[grpcclient.InferRequestedOutput("embeddings")])
            if i == len(streamed) // 2:
                client.async_stream_infer("nope", [text_input(tweet)], request_id="unknown-model")
        client.stop_stream()  # half-closes, then waits for every answer and the end of the stream
        ids, got, errors = [], {}, []
        while not answers.empty():
            result, error = answers.get_nowait()
            if error is not None:
                errors.append(error.message())
                continue
            ids.append(result.get_response().id)
            got[ids[-1]] = result.as_numpy("embeddings")[0]
        check(sorted(ids) == sorted(f"tweet-{i}" for i in range(len(streamed))),
              f"stream: {len(ids)} answers for {len(streamed)} requests, one under each id")
        worst = max(float(np.abs(got[f"tweet-{i}"] - expected[i % len(TWEETS)]).max()) for i in range(len(streamed)))
        check(worst < 1e-4, f"stream answers vs transformers: max diff {worst:.2e}")
        check(len(errors) == 1 and "unknown model 'nope'" in errors[0],
              f"stream: an unknown model is an error answer and the stream goes on: {errors}")
        after = client.get_inference_statistics("minilm").model_stats[0]
        executions = after.execution_count - before.execution_count
        done = after.inference_stats.success.count - before.inference_stats.success.count
        check(done == len(streamed) and executions < done,
              f"stream: {done} requests batched into {executions} executions")

        # A stream left open when SIGTERM comes: its request is answered, then the server ends it
        # (CANCELLED) and still drains and exits 0 in time (checked on leaving `serving`).
        open_answers = queue.Queue()
        client.start_stream(callback=lambda result, error: open_answers.put((result, error)), stream_timeout=120)
        client.async_stream_infer("sentiment", [text_input(CLASSIFICATION_TEXTS[0])], request_id="before-sigterm")
        result, error = open_answers.get(timeout=60)
        check(error is None and result.get_response().id == "before-sigterm", "stream kept open across SIGTERM: answered")
    result, error = open_answers.get(timeout=30)
    check(result is None and error is not None, f"stream open at SIGTERM ended by the server: {error}")
    client.stop_stream()
    client.close()
    print("gRPC conformance: all checks passed")


if __name__ == "__main__":
    sys.exit(main())
