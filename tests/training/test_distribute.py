"""Strategies by name; mirrored `fit` on two logical CPUs; two multiworker `Trainer` processes on loopback.

Each distributed case runs in fresh Python processes: logical devices must be
configured before TensorFlow initialises them, and each worker is its own process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from finetune.training.distribute import DistributeError, global_batch_size, make_strategy, scale_learning_rate, tf_config_from_env

TIMEOUT_S = 60  # per process; on an idle 2-core machine each case takes about 10 s
TINY_MODEL = """
import keras, numpy as np
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                          keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax")])
rng = np.random.default_rng(0)
x, y = rng.normal(size=(64, 8, 8, 3)).astype("float32"), rng.integers(0, 3, 64)
"""

MIRRORED = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from finetune.training.distribute import make_strategy, global_batch_size
strategy = make_strategy("mirrored")
with strategy.scope():
{model}
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
history = model.fit(x, y, batch_size=global_batch_size(8, strategy), epochs=2, verbose=0).history
print("RESULT", json.dumps({{"replicas": strategy.num_replicas_in_sync, "loss": history["loss"]}}))
"""

WORKER = """
import sys
from finetune.training.distribute import make_strategy, global_batch_size
from finetune.training.loop import Trainer
strategy = make_strategy("multiworker")
with strategy.scope():
{model}
    trainer = Trainer(model, "sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(global_batch_size(8, strategy))
history = trainer.fit(dataset, epochs=2, verbose=0).history
np.save(sys.argv[1], np.concatenate([w.ravel() for w in model.get_weights()]))
print("RESULT", json.dumps({{"replicas": strategy.num_replicas_in_sync, "loss": history["loss"]}}))
"""


def _script(template: str) -> str:
    model = textwrap.indent(TINY_MODEL.strip(), "    ")
    return "import json, os\nimport tensorflow as tf\n" + template.format(model=model)


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow", **extra}
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _result(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, stdout
    return json.loads(lines[-1][len("RESULT "):])


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_none_and_auto_on_cpu_are_the_default_strategy():
    import tensorflow as tf

    assert make_strategy("none") is tf.distribute.get_strategy()
    assert make_strategy("auto").num_replicas_in_sync == 1
    assert global_batch_size(16, make_strategy("none")) == 16
    assert scale_learning_rate(0.1, make_strategy("none"), base_replicas=2) == pytest.approx(0.05)


@pytest.mark.parametrize("tf_config, message", [
    (None, "needs TF_CONFIG"),
    ("{not json", "not valid JSON"),
    ('{"cluster": {}, "task": {"type": "worker", "index": 0}}', "no cluster.worker"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}', "outside cluster.worker"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "ps", "index": 0}}', "must name a job"),
])
def test_multiworker_refuses_a_bad_tf_config(monkeypatch, tf_config, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(DistributeError, match=message):
        make_strategy("multiworker")


def test_unknown_strategy_name():
    with pytest.raises(DistributeError, match="choose one of auto, none, mirrored, multiworker"):
        make_strategy("tpu")


def test_tf_config_is_parsed(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}')
    assert tf_config_from_env()["task"] == {"type": "worker", "index": 1}


def test_mirrored_fit_on_two_logical_cpus():
    done = subprocess.run([sys.executable, "-c", _script(MIRRORED)], capture_output=True, text=True,
                          timeout=TIMEOUT_S, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    result = _result(done.stdout)
    assert result["replicas"] == 2 and all(np.isfinite(result["loss"]))


def test_multiworker_trainer_two_processes_end_with_equal_weights(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append(subprocess.Popen(
            [sys.executable, "-c", _script(WORKER), str(tmp_path / f"weights{index}.npy")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(TF_CONFIG=tf_config)))
    outputs = []
    try:
        for worker in workers:
            outputs.append(worker.communicate(timeout=TIMEOUT_S))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    for worker, (stdout, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]
        result = _result(stdout)
        assert result["replicas"] == 2 and all(np.isfinite(result["loss"]))
    first, second = (np.load(tmp_path / f"weights{i}.npy") for i in range(2))
    np.testing.assert_allclose(first, second, rtol=0, atol=1e-6)
    assert not np.allclose(first, 0)
