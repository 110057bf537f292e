"""Export a text run: a SavedModel that takes raw strings, or a token-ids model plus its vocabulary.

``savedmodel``: one ``serve(texts)`` endpoint (a ``tf.string`` vector in, class probabilities out) with the
run's whole input spec inside the graph: HTML tags and the common entities removed, Unicode normalised,
whitespace collapsed, then the checkpoint's own tokenizer (keras-hub's, TensorFlow Text ops) or GloVe's
word tokens and the task's vocabulary, cut at the run's sequence length. Serving it needs TensorFlow and
``tensorflow_text`` only (``import tensorflow_text`` registers the tokenizer's ops); the parity check runs
it in a fresh Python process that imports nothing else. Entities beyond ``&amp; &lt; &gt; &quot; &#39;
&apos; &nbsp;`` stay as written in the graph (Python's ``html.unescape`` decodes them all).

``tflite`` / ``onnx``: the model on token ids (``token_ids``, ``padding_mask``, ``segment_ids`` for BERT
encoders) of length ``sequence_length``, with ``vocab.txt`` (or ``words.txt`` for GloVe: id ``i + 2`` is
line ``i``) and ``spec.json`` beside it: tokenize with them on the device.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np

from .errors import ExportError

#: The HTML entities the exported graph decodes (what reviews and web text mostly carry).
ENTITIES = (("&nbsp;", " "), ("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#39;", "'"), ("&apos;", "'"),
            ("&amp;", "&"))
PARITY_TEXTS = 64


def graph_normalize(texts, spec):
    """:meth:`TextSpec.normalize` in TensorFlow ops (see the module docstring for the entities)."""
    import tensorflow as tf
    import tensorflow_text as tf_text

    from .data.text import TAG

    if spec.strip_html:
        texts = tf.strings.regex_replace(texts, TAG.pattern, " ")
        for entity, char in ENTITIES:
            texts = tf.strings.regex_replace(texts, entity, char)
    texts = tf_text.normalize_utf8(texts, spec.unicode_form)
    return tf.strings.strip(tf.strings.regex_replace(texts, r"[\s\p{Z}]+", " "))


def _word_ids(texts, spec, lookup):
    """GloVe's word tokens of ``texts`` as padded ids (:func:`finetune.data.words.encode_words` in the graph)."""
    import tensorflow as tf
    import tensorflow_text as tf_text

    from .data.words import patterns

    clitic, token = patterns(word=r"[\p{L}\p{N}_]", word_chars=r"\p{L}\p{N}_", digit=r"\p{Nd}")  # RE2: Unicode classes
    lowered = tf.strings.lower(texts, encoding="utf-8")
    split = tf.strings.regex_replace(lowered, clitic, r"\1 \2")
    tokens = tf_text.regex_split(split, r"\s+|" + token, token)
    tokens = tokens[:, :spec.sequence_length]
    dense = tf.cast(lookup(tokens), tf.int32).to_tensor(default_value=0, shape=[None, spec.sequence_length])
    empty = tf.equal(tokens.row_lengths(), 0)  # a text without a word is one out-of-vocabulary token
    dense = tf.where(empty[:, None] & tf.equal(tf.range(spec.sequence_length), 0)[None, :], 1, dense)
    return {"token_ids": dense, "padding_mask": tf.not_equal(dense, 0)}


def export_text_savedmodel(run, out_path: Path) -> None:
    """Write ``run``'s model with its input spec in front, as a SavedModel taking strings."""
    import tensorflow as tf

    spec, model = run.spec, run.model
    archive = keras.export.ExportArchive()
    archive.track(model)
    names = [i.name for i in model.inputs] if not isinstance(model.input, dict) else list(model.input)
    if spec.word_level:
        lookup = keras.layers.StringLookup(vocabulary=list(spec.vocabulary), num_oov_indices=1, mask_token="\x00",
                                           name="words")  # ids: 0 mask, 1 any other word, the vocabulary from 2
        lookup(tf.constant(["a"]))  # built before it is tracked
        archive.track(lookup)

        def tokenize(texts):
            return _word_ids(texts, spec, lookup)
    else:
        from .data.text import _packer

        packer = _packer(spec.tokenizer, spec.sequence_length)
        archive.track(packer)

        def tokenize(texts):
            return packer(texts)

    def serve(texts):
        inputs = tokenize(graph_normalize(texts, spec))
        return model({k: inputs[k] for k in names}, training=False)

    archive.add_endpoint("serve", serve, input_signature=[tf.TensorSpec([None], tf.string, name="texts")])
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".export-") as tmp:
        archive.write_out(str(Path(tmp) / "saved"), verbose=False)
        if out_path.is_dir():
            shutil.rmtree(out_path)
        os.replace(Path(tmp) / "saved", out_path)


#: Run in a fresh interpreter: only TensorFlow and TensorFlow Text imported, as a server would.
_SERVE_SCRIPT = """
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)
texts = json.load(sys.stdin)
model = tf.saved_model.load(sys.argv[1])
out = [model.serve(tf.constant(texts[i:i + 32])).numpy().tolist() for i in range(0, len(texts), 32)]
mods = sorted(m for m in sys.modules if m.split(".")[0] in ("keras_hub", "keras_nlp", "finetune"))
json.dump({"probabilities": [row for chunk in out for row in chunk], "modules": mods}, sys.stdout)
"""


def serve_in_fresh_process(path: Path, texts: list[str]) -> tuple[np.ndarray, list[str]]:
    """Probabilities of an exported string SavedModel from a new interpreter that imports only TensorFlow and
    TensorFlow Text, and the keras-hub / finetune modules it ended up loading (none, for a self-contained export;
    TensorFlow itself may import Keras)."""
    done = subprocess.run([sys.executable, "-c", _SERVE_SCRIPT, str(path)], input=json.dumps(texts),
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if done.returncode:
        raise ExportError(f"the exported SavedModel failed to serve in a fresh process: {done.stderr[-800:]}")
    result = json.loads(done.stdout)
    return np.asarray(result["probabilities"], np.float32), result["modules"]


def parity_texts(run, texts=None) -> tuple[list[str], str]:
    """Texts to compare on: given, the run's test split, else its training texts (at most :data:`PARITY_TEXTS`)."""
    if texts is not None:
        return [str(t) for t in texts], "given"
    from .errors import DataError, RunError

    try:
        splits = run.splits()
    except (DataError, RunError):
        splits = {}
    for name in ("test", "val", "train"):
        if splits.get(name):
            return [t for t, _ in splits[name][:PARITY_TEXTS]], f"{name} split"
    raise ExportError(f"{run.path}: no texts to check the export on; pass texts=[...]")


def token_model_files(run, out_path: Path) -> None:
    """Beside a token-ids export: the vocabulary and the spec that turn texts into its inputs."""
    folder = out_path.parent
    spec = run.spec
    (folder / "spec.json").write_text(json.dumps(spec.to_dict(), indent=2), encoding="utf-8")
    if spec.word_level:
        (folder / "words.txt").write_text("\n".join(spec.vocabulary) + "\n", encoding="utf-8")
        return
    from .data.text import _packer

    vocabulary = _packer(spec.tokenizer, spec.sequence_length).tokenizer.get_vocabulary()
    (folder / "vocab.txt").write_text("\n".join(vocabulary) + "\n", encoding="utf-8")


def run_token_model(path: Path, format: str, inputs: dict[str, np.ndarray], batch_size: int = 32) -> np.ndarray:
    """Run a token-ids export (TFLite or ONNX) with its own runtime, ``batch_size`` texts at a time."""
    n = len(next(iter(inputs.values())))
    if format == "tflite":
        import warnings

        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice (moving to ai-edge-litert)
            interpreter = tf.lite.Interpreter(model_path=str(path))
        runner = interpreter.get_signature_runner()

        def run(batch):
            return next(iter(runner(**batch).values()))
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]

        def run(batch):
            return session.run(None, {name: batch[name] for name in names})[0]
    return np.concatenate([run({k: v[i:i + batch_size] for k, v in inputs.items()}) for i in range(0, n, batch_size)])


def token_inputs(run, texts: list[str]) -> dict[str, np.ndarray]:
    """The token-ids model's inputs for ``texts`` at the full sequence length (as a device feeds it)."""
    inputs = run.spec.prepare(texts)
    names = list(run.model.input) if isinstance(run.model.input, dict) else [i.name for i in run.model.inputs]
    dtypes = {i.name: i.dtype for i in run.model.inputs}
    return {k: inputs[k].astype("bool" if dtypes.get(k) == "bool" else np.int32) for k in names}
