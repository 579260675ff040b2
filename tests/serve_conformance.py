#!/usr/bin/env python3
"""Conformance of `scalebert serve` with an unchanged standard KServe v2 client (tritonclient.http).

Builds a model repository in a temporary folder from examples/model_repository's configs (MiniLM
and the tiny fixtures linked in as version 1), starts the server on a free loopback port, and
checks with tritonclient: health, metadata, config, repository index/load/unload, statistics,
inference with binary tensor data (tritonclient's default) and with JSON, against transformers
(MiniLM embeddings: mean pooling + L2 normalization; classification logits of the tiny model), error
statuses, and that SIGTERM drains and exits 0. Every wait is bounded.

usage: .venv/bin/python tests/serve_conformance.py --binary build-serve/scalebert --fixtures build-serve/fixtures
"""
import argparse
import os
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_conformance_common import (CLASSIFICATION_TEXTS, TWEETS, check, classification_reference,  # noqa: E402
                                      free_port, minilm_path, minilm_reference, serving, wait_until_ready)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--fixtures", required=True)
    args = parser.parse_args()
    minilm = minilm_path()

    port, metrics_port = free_port(), free_port()
    # HTTP only here: gRPC has its own conformance test (serve_conformance_grpc.py), and the default
    # gRPC port 8001 may be taken by a test running beside this one.
    with serving(args.binary, args.fixtures, minilm, "scalebert_conformance_",
                 ["--http-port", str(port), "--metrics-port", str(metrics_port), "--no-grpc"]):
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}", connection_timeout=10, network_timeout=30)
        wait_until_ready(client.is_server_ready)
        check(client.is_server_live() and client.is_server_ready(), "server live and ready (strict: every model loaded)")
        metadata = client.get_server_metadata()
        check("binary_tensor_data" in metadata["extensions"], f"server metadata {metadata}")
        check(client.get_model_metadata("minilm")["inputs"][0] == {"name": "text", "datatype": "BYTES", "shape": [-1, 1]},
              "model metadata")
        check(client.get_model_config("minilm")["max_batch_size"] == 32, "model config")
        index = client.get_model_repository_index()
        check(sorted(item["name"] for item in index) == ["minilm", "ner", "qa", "sentiment"]
              and all(item["state"] == "READY" for item in index), f"repository index {index}")

        # MiniLM embeddings against transformers + sentence-transformers pooling.
        batch, hidden, expected = minilm_reference(minilm, TWEETS)
        for binary in (True, False):
            text = httpclient.InferInput("text", [len(TWEETS), 1], "BYTES")
            text.set_data_from_numpy(np.array([[t.encode()] for t in TWEETS], dtype=object), binary_data=binary)
            outputs = [httpclient.InferRequestedOutput("embeddings", binary_data=binary)]
            result = client.infer("minilm", [text], outputs=outputs)
            got = result.as_numpy("embeddings")
            check(got.shape == expected.shape and np.abs(got - expected).max() < 1e-4,
                  f"MiniLM embeddings ({'binary' if binary else 'JSON'}) vs transformers: max diff "
                  f"{np.abs(got - expected).max():.2e}")
        # Token tensors (INT64, binary): last_hidden_state at the kept positions.
        ids = batch["input_ids"].numpy().astype(np.int64)
        inputs = []
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            tensor = httpclient.InferInput(name, list(ids.shape), "INT64")
            tensor.set_data_from_numpy(batch[name].numpy().astype(np.int64))
            inputs.append(tensor)
        result = client.infer("minilm", inputs, outputs=[httpclient.InferRequestedOutput("last_hidden_state")])
        got = result.as_numpy("last_hidden_state")
        kept = batch["attention_mask"].numpy().astype(bool)
        difference = np.abs(got[kept] - hidden.numpy()[kept]).max()
        check(difference < 1e-4, f"MiniLM last_hidden_state from token tensors vs transformers: max diff {difference:.2e}")

        # Classification: logits against transformers, labels from id2label.
        logits, labels = classification_reference(args.fixtures, CLASSIFICATION_TEXTS)
        text = httpclient.InferInput("text", [2, 1], "BYTES")
        text.set_data_from_numpy(np.array([[t.encode()] for t in CLASSIFICATION_TEXTS], dtype=object))
        result = client.infer("sentiment", [text])  # no outputs named: every output, binary
        check(np.abs(result.as_numpy("logits") - logits).max() < 1e-4, "classification logits vs transformers")
        check([v[0].decode() for v in result.as_numpy("label")] == labels, f"labels {labels}")

        # NER entities and a QA answer come back as BYTES.
        text = httpclient.InferInput("text", [1, 1], "BYTES")
        text.set_data_from_numpy(np.array([[b"bank revenue rose usd 5 million"]], dtype=object))
        entities = client.infer("ner", [text]).as_numpy("entities")
        check(entities.shape == (1, 1) and entities[0, 0].decode().startswith("["), f"NER entities {entities[0, 0][:80]}")
        question = httpclient.InferInput("question", [1, 1], "BYTES")
        question.set_data_from_numpy(np.array([[b"what rose?"]], dtype=object))
        context = httpclient.InferInput("context", [1, 1], "BYTES")
        context.set_data_from_numpy(np.array([[b"bank revenue rose in the quarter"]], dtype=object))
        answer = client.infer("qa", [question, context])
        check(answer.as_numpy("answer").shape == (1, 1), f"QA answer {answer.as_numpy('answer')[0, 0]!r}")

        # Errors reach the client as InferenceServerException with the status.
        try:
            bad = httpclient.InferInput("text", [1, 1], "INT64")
            bad.set_data_from_numpy(np.array([[1]], dtype=np.int64))
            client.infer("minilm", [bad])
            check(False, "wrong datatype refused")
        except InferenceServerException as error:
            check(error.status() == "400", f"wrong datatype: 400 {error.message()}")
        try:
            client.infer("nope", [text])
            check(False, "unknown model refused")
        except InferenceServerException as error:
            check(error.status() == "404", f"unknown model: 404 {error.message()}")

        stats = client.get_inference_statistics("minilm")["model_stats"][0]
        check(int(stats["inference_count"]) >= 3 * len(TWEETS), f"statistics: inference_count {stats['inference_count']}")
        client.unload_model("qa")
        check(not client.is_model_ready("qa"), "unload")
        client.load_model("qa")
        check(client.is_model_ready("qa"), "load")
        import urllib.request
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        check('nv_inference_request_success{model="minilm",version="1"}' in metrics, "Prometheus metrics")
    print("conformance: all checks passed")


if __name__ == "__main__":
    sys.exit(main())
