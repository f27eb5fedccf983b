"""One process of lrtools run across devices or processes, started by tests/test_distributed.py.

Usage: ``python _distributed_worker.py MODE OUT_JSON`` where MODE is

- ``single``: one process, no distribution (the reference);
- ``multiworker``: one worker of ``tf.distribute.MultiWorkerMirroredStrategy``
  (``TF_CONFIG`` set by the test: two workers on 127.0.0.1);
- ``jax``: Keras's distribution API on JAX, ``keras.distribution.DataParallel``
  over the virtual CPU devices (``XLA_FLAGS`` sets how many).

Each mode trains the same tiny regression three ways (a schedule inside the
optimizer, ``callbacks.LRScheduler``, ``callbacks.OneCycle`` with momentum
cycling), records the rate and momentum of every step, then runs
``lr_range_test`` and records its losses and whether every variable came back
bit for bit. The test compares the JSON files the processes write.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from lrtools import callbacks, finder, schedules  # noqa: E402

STEPS_PER_EPOCH = 6
EPOCHS = 2
GLOBAL_BATCH = 8
TOTAL_STEPS = STEPS_PER_EPOCH * EPOCHS


def tiny_problem() -> tuple[np.ndarray, np.ndarray]:
    """A linear regression of 4 features, one epoch of ``STEPS_PER_EPOCH`` global batches."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(STEPS_PER_EPOCH * GLOBAL_BATCH, 4)).astype("float32")
    y = (x @ rng.normal(size=(4, 1)) + 0.1 * rng.normal(size=(len(x), 1))).astype("float32")
    return x, y


def build_model(learning_rate, momentum: float = 0.0) -> keras.Model:
    """The same compiled one-layer model, with the same initial weights, on every call."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=momentum), loss="mse")
    return model


class RateProbe(keras.callbacks.Callback):
    """Record the step and the rate the optimizer holds before every batch."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[int] = []
        self.rates: list[float] = []

    def on_train_batch_begin(self, batch, logs=None) -> None:
        optimizer = self.model.optimizer
        self.steps.append(int(keras.ops.convert_to_numpy(optimizer.iterations)))
        self.rates.append(float(keras.ops.convert_to_numpy(optimizer.learning_rate)))


def fit(model: keras.Model, extra: list, data) -> dict:
    probe = RateProbe()
    history = model.fit(
        data, epochs=EPOCHS, steps_per_epoch=STEPS_PER_EPOCH, callbacks=[*extra, probe], verbose=0
    )
    weights = [np.asarray(w).tolist() for w in model.get_weights()]
    return {
        "steps": probe.steps,
        "rates": probe.rates,
        "loss": history.history["loss"],
        "weights": weights,
    }


def checksum(model: keras.Model) -> list[float]:
    variables = [*model.variables, *model.optimizer.variables]
    return [
        float(np.sum(np.abs(np.asarray(keras.ops.convert_to_numpy(v)), dtype=np.float64)))
        for v in variables
    ]


def run_all(make_data) -> dict:
    out = {}
    model = build_model(schedules.CosineDecay(0.05, decay_steps=TOTAL_STEPS))
    out["in_optimizer"] = fit(model, [], make_data())
    model = build_model(0.05)
    scheduler = callbacks.LRScheduler(schedules.StepDecay(0.05, drop=0.5, step_size=4))
    out["lr_scheduler"] = fit(model, [scheduler], make_data())
    model = build_model(0.05, momentum=0.9)
    one_cycle = callbacks.OneCycle(max_lr=0.05, total_steps=TOTAL_STEPS)
    out["one_cycle"] = fit(model, [one_cycle], make_data())
    out["one_cycle"]["momenta"] = [float(m) for m in one_cycle.momenta]

    out["range_test_fresh"] = range_test(build_model(0.01, momentum=0.9))
    model = build_model(0.01, momentum=0.9)
    x, y = tiny_problem()
    model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, verbose=0)  # a warm model
    out["range_test"] = range_test(model)
    return out


def custom_loop(model: keras.Model, extra: list, strategy, data) -> dict:
    """Train as ``fit`` would, with a step of our own: Keras 3 cannot ``fit`` under
    MultiWorkerMirroredStrategy (keras-team/keras#20585), so the callbacks are driven
    through a ``CallbackList`` the way Keras's guide to custom loops does it."""
    import tensorflow as tf

    probe = RateProbe()
    callback_list = keras.callbacks.CallbackList([*extra, probe], model=model)
    callback_list.on_train_begin()
    optimizer = model.optimizer

    @tf.function
    def step(x, y):
        def replica_step(x, y):
            with tf.GradientTape() as tape:
                loss = keras.losses.mean_squared_error(y, model(x, training=True))
                loss = tf.nn.compute_average_loss(loss, global_batch_size=GLOBAL_BATCH)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)
            return loss

        losses = strategy.run(replica_step, args=(x, y))
        return strategy.reduce("SUM", losses, axis=None)

    iterator = iter(strategy.experimental_distribute_dataset(data))
    epoch_losses = []
    for epoch in range(EPOCHS):
        callback_list.on_epoch_begin(epoch)
        for batch in range(STEPS_PER_EPOCH):
            callback_list.on_train_batch_begin(batch)
            loss = float(step(*next(iterator)))
            callback_list.on_train_batch_end(batch, {"loss": loss})
        callback_list.on_epoch_end(epoch, {"loss": loss})
        epoch_losses.append(loss)
    callback_list.on_train_end()
    weights = [np.asarray(w).tolist() for w in model.get_weights()]
    return {"steps": probe.steps, "rates": probe.rates, "loss": epoch_losses, "weights": weights}


def range_test(model: keras.Model, **options) -> dict:
    """Run the range test on ``model`` (seeded) and say whether every variable came back."""
    x, y = tiny_problem()
    if not model.optimizer.built:  # its slots exist before, to compare
        model.optimizer.build(model.trainable_variables)
    before = checksum(model)
    keras.utils.set_random_seed(1)  # the batches' order: the same on every worker
    result = finder.lr_range_test(
        model,
        x,
        y,
        batch_size=GLOBAL_BATCH,
        num_steps=20,
        start_lr=1e-4,
        end_lr=1.0,
        verbose=0,
        **options,
    )
    return {
        "lrs": result.lrs.tolist(),
        "losses": result.losses.tolist(),
        "restored": checksum(model) == before,
        "rate_after": float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)),
    }


def run_multiworker(strategy, make_data) -> dict:
    out = {}
    with strategy.scope():
        model = build_model(schedules.CosineDecay(0.05, decay_steps=TOTAL_STEPS))
    out["in_optimizer"] = custom_loop(model, [], strategy, make_data())
    with strategy.scope():
        model = build_model(0.05)
    scheduler = callbacks.LRScheduler(schedules.StepDecay(0.05, drop=0.5, step_size=4))
    out["lr_scheduler"] = custom_loop(model, [scheduler], strategy, make_data())
    with strategy.scope():
        model = build_model(0.05, momentum=0.9)
    one_cycle = callbacks.OneCycle(max_lr=0.05, total_steps=TOTAL_STEPS)
    out["one_cycle"] = custom_loop(model, [one_cycle], strategy, make_data())
    out["one_cycle"]["momenta"] = [float(m) for m in one_cycle.momenta]
    with strategy.scope():
        model = build_model(0.01, momentum=0.9)
        model.optimizer.build(model.trainable_variables)
    out["range_test_fresh"] = range_test(model)
    x, y = tiny_problem()
    try:
        range_test(model, validation_data=(x, y))
    except ValueError as error:  # the test checks the message
        out["range_test_error"] = f"{type(error).__name__}: {error}"
    return out


def main(mode: str, out_json: str) -> None:
    x, y = tiny_problem()
    if mode == "multiworker":
        import tensorflow as tf

        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )

        def make_data():
            data = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH).repeat()
            return data.with_options(options)

        out = run_multiworker(strategy, make_data)
        out["replicas"] = strategy.num_replicas_in_sync
    elif mode == "jax":
        devices = keras.distribution.list_devices()
        distribution = keras.distribution.DataParallel(devices=devices)
        with distribution.scope():
            out = run_all(lambda: _batches(x, y))
        out["replicas"] = len(devices)
    else:
        out = run_all(lambda: _batches(x, y))
        out["replicas"] = 1
    out["backend"] = keras.backend.backend()
    with open(out_json, "w") as file:
        json.dump(out, file)


def _batches(x: np.ndarray, y: np.ndarray):
    """Endless ``(x, y)`` batches of ``GLOBAL_BATCH`` rows, in order."""
    while True:
        for start in range(0, len(x), GLOBAL_BATCH):
            yield x[start : start + GLOBAL_BATCH], y[start : start + GLOBAL_BATCH]


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
