"""Distribution strategies by name, global batch size, and the linear learning-rate scaling rule.

What works on Keras 3 / TensorFlow 2.21:

- ``mirrored`` (one machine, several GPUs, or several logical CPUs): ``model.fit``
  and :class:`finetune.training.loop.Trainer` both work.
- ``multiworker`` (``MultiWorkerMirroredStrategy``, several machines): ``model.fit``
  fails ("Attempt to convert a value (PerReplica ...) to a Tensor", keras-team/keras
  #20585); train with :class:`finetune.training.loop.Trainer` instead.

Build the model, and create the ``Trainer``, inside ``strategy.scope()``; batch the
dataset with :func:`global_batch_size` (the strategy splits each batch across replicas).

Example:
    >>> import keras, numpy as np, tensorflow as tf
    >>> from finetune.training.loop import Trainer
    >>> strategy = make_strategy("auto")
    >>> with strategy.scope():   # e.g. build_model("efficientnet_lite0", 5).model
    ...     model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5)])
    ...     trainer = Trainer(model, "adam", "sparse_categorical_crossentropy")
    >>> dataset = tf.data.Dataset.from_tensor_slices((np.ones((8, 3)), np.zeros(8))).batch(global_batch_size(4, strategy))
    >>> history = trainer.fit(dataset, epochs=2, verbose=0)
    >>> len(history.history["loss"])
    2
    >>> dataset = make_dataset(items, 224, batch_size=global_batch_size(32, strategy))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf

from ..choices import STRATEGIES  # the closed list lives in finetune.choices
from ..errors import DistributeError  # a ConfigError


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """A ``tf.distribute.Strategy`` by name.

    Args:
        name: ``"auto"``: ``MirroredStrategy`` when more than one GPU is visible, else
            the default (no-op) strategy. ``"none"``: the default strategy.
            ``"mirrored"``: ``MirroredStrategy`` over all GPUs, or over all logical
            CPUs when there is no GPU. ``"multiworker"``: ``MultiWorkerMirroredStrategy``
            configured by the ``TF_CONFIG`` environment variable.

    Raises:
        DistributeError: unknown name, or ``TF_CONFIG`` missing or invalid for ``multiworker``.

    Example:
        >>> make_strategy("none").num_replicas_in_sync
        1
    """
    if name not in STRATEGIES:
        raise DistributeError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "multiworker":  # before anything initialises the devices: collectives are configured at startup
        tf_config_from_env()  # fail with a clear message before TensorFlow tries to reach the cluster
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if gpus:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])


def tf_config_from_env() -> dict[str, Any]:
    """The parsed and checked ``TF_CONFIG`` of this worker.

    Expected: ``{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}``.

    Example:
        >>> os.environ["TF_CONFIG"] = '{"cluster": {"worker": ["127.0.0.1:2222"]}, "task": {"type": "worker", "index": 0}}'
        >>> tf_config_from_env()["task"]["index"]
        0
        >>> del os.environ["TF_CONFIG"]
    """
    raw = os.environ.get("TF_CONFIG")
    example = '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}'
    if not raw:
        raise DistributeError(f"the multiworker strategy needs TF_CONFIG in the environment, e.g. TF_CONFIG='{example}'")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as err:
        raise DistributeError(f"TF_CONFIG is not valid JSON ({err}); expected e.g. {example}") from err
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster.get("worker") and not cluster.get("chief"):
        raise DistributeError(f"TF_CONFIG has no cluster.worker list; expected e.g. {example}")
    if not isinstance(task, dict) or task.get("type") not in cluster or not isinstance(task.get("index"), int):
        raise DistributeError(f"TF_CONFIG task must name a job of its cluster and an integer index; expected e.g. {example}")
    if not 0 <= task["index"] < len(cluster[task["type"]]):
        raise DistributeError(f"TF_CONFIG task index {task['index']} is outside cluster.{task['type']} "
                              f"({len(cluster[task['type']])} address(es))")
    return config


def global_batch_size(per_replica: int, strategy: tf.distribute.Strategy | None = None) -> int:
    """The batch size to give the dataset: ``per_replica`` times the replicas in sync.

    Example:
        >>> global_batch_size(32, make_strategy("none"))
        32
    """
    strategy = strategy or tf.distribute.get_strategy()
    return int(per_replica) * strategy.num_replicas_in_sync


def scale_learning_rate(lr: float, strategy: tf.distribute.Strategy | None = None, base_replicas: int = 1) -> float:
    """The linear scaling rule (Goyal et al. 2017): the learning rate grows with the global batch.

    A learning rate tuned for ``base_replicas`` replicas (same per-replica batch)
    becomes ``lr * replicas / base_replicas``. Opt-in: it helps SGD-like optimizers
    at moderate scale, usually with a few warm-up epochs; adaptive optimizers
    (Adam) often need less than linear scaling.

    Example:
        >>> scale_learning_rate(1e-3, make_strategy("none"))
        0.001
    """
    strategy = strategy or tf.distribute.get_strategy()
    return float(lr) * strategy.num_replicas_in_sync / base_replicas
