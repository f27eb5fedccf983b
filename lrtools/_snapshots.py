"""``SnapshotEnsemble`` in three parts: when a snapshot is taken, where it is kept, how combined.

- :class:`CycleEnds`: *when*: the steps at which a cycle ends.
- :class:`MemoryStore` and :class:`FolderStore`: *where*: in memory, or as
  ``.weights.h5`` files in a folder with a manifest that says which run wrote them.
- :func:`mean_prediction` and :func:`averaging_model`: *how*: the mean of the
  members' predictions, or one Keras model that computes it.

Public through :mod:`lrtools.callbacks`; see :class:`SnapshotEnsemble`.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from lrtools._scheduler import _current_step


@dataclass(frozen=True)
class Snapshot:
    """The weights of the model at the end of one cycle.

    Attributes:
        step: the optimizer step (``optimizer.iterations``) when it was taken.
        weights: the weights (``model.get_weights()``), for in-memory snapshots.
        path: the ``.weights.h5`` file, for snapshots saved to a directory.
    """

    step: int
    weights: list[np.ndarray] | None = None
    path: str | None = None

    def load_into(self, model: keras.Model) -> None:
        """Set ``model``'s weights to this snapshot's."""
        if self.path is not None:
            model.load_weights(self.path)
        else:
            model.set_weights(self.weights)


# --------------------------------------------------------------------------- when


def _whole_number(value: Any) -> int | None:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    return None


class CycleEnds:
    """The steps after which a cycle ends: every ``n`` steps, or the running sums of lengths.

    Args:
        cycle_steps: an int ``n`` (ends at ``n, 2n, 3n, ...``) or a sequence of cycle
            lengths (ends at their running sums, none after the last).

    Raises:
        ValueError: if the lengths are not whole numbers >= 1, or the sequence is empty.
    """

    def __init__(self, cycle_steps: int | Sequence[int]):
        repeating = not isinstance(cycle_steps, Sequence)
        lengths = [cycle_steps] if repeating else list(cycle_steps)
        if not lengths or any(_whole_number(n) is None or n < 1 for n in lengths):
            raise ValueError(
                "cycle_steps must be a whole number of steps >= 1, or a non-empty sequence of "
                f"them; got {cycle_steps!r}."
            )
        self._every = int(lengths[0]) if repeating else None
        self._ends = set() if repeating else {int(end) for end in np.cumsum(lengths)}

    def __contains__(self, step: int) -> bool:
        if self._every is not None:
            return step > 0 and step % self._every == 0
        return step in self._ends

    def between(self, first: int, last: int) -> list[int]:
        """The cycle ends in ``[first, last]``."""
        return [step for step in range(first, last + 1) if step in self]


# --------------------------------------------------------------------------- where


class MemoryStore:
    """Keep snapshots as arrays in memory (``model.get_weights()``)."""

    def open(self, model: keras.Model, step: int, kept: list[Snapshot]) -> list[Snapshot]:
        """The snapshots this run continues from: the ones already held."""
        return kept

    def take(self, model: keras.Model, step: int) -> Snapshot:
        return Snapshot(step, weights=model.get_weights())

    def drop(self, snapshot: Snapshot) -> None:
        """Forget ``snapshot`` (nothing to delete)."""

    def record(self, model: keras.Model, snapshots: list[Snapshot]) -> None:
        """Nothing to record: the list in memory is the record."""


def _architecture(model: keras.Model) -> list[list]:
    """What the weights of ``model`` look like: shape and dtype of each, in order."""
    return [[list(weight.shape), str(weight.dtype)] for weight in model.weights]


def _unwritable(directory: str, error: OSError) -> ValueError:
    return ValueError(
        f"SnapshotEnsemble cannot write to the directory {directory!r} ({error}). Pass a "
        "directory you can write to, or directory=None to keep the snapshots in memory."
    )


class FolderStore:
    """Keep snapshots as ``snapshot-<step>.weights.h5`` files, with a manifest of this run's.

    The manifest (``snapshots.json``) records the model's architecture (each weight's
    shape and dtype) and the steps of the snapshots the callback wrote. When training
    begins, :meth:`open` creates the folder and writes the manifest at once, so a
    folder that cannot be written is refused then, not at the first cycle end. A file
    already there is picked up (a resumed run) only if the manifest lists it, the
    architecture is the model's, and its step is not past the optimizer's step; any
    other snapshot file (left by an earlier, different run) is ignored with a warning
    and left on disk (overwritten if this run takes a snapshot at the same step).

    Args:
        directory: the folder; created if missing.
    """

    FILE_PATTERN = re.compile(r"snapshot-(\d+)\.weights\.h5")
    MANIFEST = "snapshots.json"

    def __init__(self, directory: str | os.PathLike):
        self.directory = os.fspath(directory)

    def path(self, step: int) -> str:
        """The file of the snapshot at ``step``."""
        return os.path.join(self.directory, f"snapshot-{step:08d}.weights.h5")

    def open(self, model: keras.Model, step: int, kept: list[Snapshot]) -> list[Snapshot]:
        """Check the folder, and return the snapshots of this run found there (by step)."""
        try:
            os.makedirs(self.directory, exist_ok=True)
            names = sorted(os.listdir(self.directory))
        except OSError as error:
            raise _unwritable(self.directory, error) from error
        manifest = self._read_manifest()
        ours = set(manifest.get("steps", []))
        if manifest.get("architecture") != _architecture(model):
            ours = set()
        found, ignored = [], []
        for name in names:
            match = self.FILE_PATTERN.fullmatch(name)
            if match and int(match.group(1)) in ours and int(match.group(1)) <= step:
                found.append(Snapshot(int(match.group(1)), path=os.path.join(self.directory, name)))
            elif match:
                ignored.append(name)
        if ignored:
            warnings.warn(
                f"SnapshotEnsemble ignores {len(ignored)} snapshot file(s) in "
                f"{self.directory!r} that this run did not write ({', '.join(ignored)}): "
                "another model's, or another run's (this one is at step "
                f"{step}). Use an empty directory for each run to keep them apart.",
                stacklevel=3,
            )
        self.record(model, found)  # writes the manifest: the check that the folder is writable
        return found

    def take(self, model: keras.Model, step: int) -> Snapshot:
        model.save_weights(self.path(step))
        return Snapshot(step, path=self.path(step))

    def drop(self, snapshot: Snapshot) -> None:
        """Delete ``snapshot``'s file."""
        os.remove(snapshot.path)

    def record(self, model: keras.Model, snapshots: list[Snapshot]) -> None:
        """Write the manifest: this model's architecture and the steps of ``snapshots``."""
        manifest = {"architecture": _architecture(model), "steps": [s.step for s in snapshots]}
        path = os.path.join(self.directory, self.MANIFEST)
        try:
            with open(path + ".tmp", "w", encoding="utf-8") as file:
                json.dump(manifest, file)
            os.replace(path + ".tmp", path)
        except OSError as error:
            raise _unwritable(self.directory, error) from error

    def _read_manifest(self) -> dict:
        try:
            with open(os.path.join(self.directory, self.MANIFEST), encoding="utf-8") as file:
                manifest = json.load(file)
        except (OSError, ValueError):
            return {}
        return manifest if isinstance(manifest, dict) else {}


# --------------------------------------------------------------------------- how


def members(snapshots: list[Snapshot], model: keras.Model) -> list[tuple[Snapshot, keras.Model]]:
    """One clone of ``model`` per snapshot, holding that snapshot's weights."""
    result = []
    for snapshot in snapshots:
        member = keras.models.clone_model(model)
        snapshot.load_into(member)
        result.append((snapshot, member))
    return result


def mean_prediction(
    models: list[tuple[Snapshot, keras.Model]], x: Any, batch_size: int | None = None
) -> np.ndarray:
    """The element-wise mean of the members' predictions on ``x``."""
    predictions = [m.predict(x, batch_size=batch_size, verbose=0) for _, m in models]
    return np.mean(predictions, axis=0)


def averaging_model(model: keras.Model, models: list[tuple[Snapshot, keras.Model]]) -> keras.Model:
    """A functional model on ``model``'s inputs whose output is the mean of the members'."""
    inputs = [keras.Input(shape=t.shape[1:], dtype=t.dtype) for t in model.inputs]
    inputs = inputs[0] if len(inputs) == 1 else inputs
    outputs = [
        keras.Model(member.inputs, member.outputs[0], name=f"snapshot_{snapshot.step}")(inputs)
        for snapshot, member in models
    ]
    average = outputs[0] if len(outputs) == 1 else keras.layers.Average()(outputs)
    return keras.Model(inputs, average, name="snapshot_ensemble")


# --------------------------------------------------------------------------- the callback


class SnapshotEnsemble(keras.callbacks.Callback):
    """Snapshot ensembles (Huang et al., 2017): keep the weights at each cycle's end.

    Train with a cyclic or restarting schedule (``CosineRestarts``, ``CyclicLR``)
    and this callback saves the model's weights whenever ``optimizer.iterations``
    reaches the end of a cycle; :meth:`predict` and :meth:`ensemble` then average
    the predictions of the snapshots, which costs one training run for several
    models.

    ``cycle_steps`` gives the cycles: an int ``n`` for cycles of ``n`` steps
    (snapshots at steps ``n, 2n, 3n, ...``), or a sequence of cycle lengths for
    cycles that grow (``CosineRestarts`` with ``t_mul > 1``): snapshots at their
    running sums, and none after the last listed cycle.

    Snapshots are kept in memory, or with ``directory`` written there as
    ``snapshot-<step>.weights.h5`` next to a manifest, ``snapshots.json``. When
    training begins the folder is created and the manifest written, so a folder
    that cannot be written is refused at once (``ValueError``). A callback given a
    folder that already holds snapshots picks up those of the same run (a resumed
    run: listed in the manifest, same architecture, taken at or before the
    optimizer's step) and ignores any other, with a warning: snapshots of an earlier,
    different run are never mixed into this one's ensemble. ``keep`` limits the
    number kept: the oldest are dropped (and their files deleted).

    With ``steps_per_execution = k > 1`` Keras calls batch callbacks only after
    every ``k`` steps (and at the end of each epoch), so a cycle that ends inside
    a compiled call cannot be caught at its last step: the callback warns that
    the snapshot was missed. Let cycles end on epoch boundaries or on multiples
    of ``k``.

    Args:
        cycle_steps: the cycle length in steps, or a sequence of cycle lengths.
        directory: where to write the snapshots; ``None`` keeps them in memory.
        keep: how many of the latest snapshots to keep; ``None`` keeps all.

    Raises:
        ValueError: for cycle lengths or ``keep`` that are not whole numbers >= 1;
            when training begins, for a ``directory`` that cannot be written.

    Example:

    >>> import keras, lrtools
    >>> optimizer = keras.optimizers.SGD(
    ...     lrtools.schedules.CosineRestarts(0.1, first_cycle_steps=200), momentum=0.9
    ... )
    >>> snapshots = SnapshotEnsemble(cycle_steps=200, keep=5)
    >>> # model.fit(x, y, epochs=50, callbacks=[snapshots])
    >>> # probabilities = snapshots.predict(x_test)
    """

    FILE_PATTERN = FolderStore.FILE_PATTERN

    def __init__(
        self,
        cycle_steps: int | Sequence[int],
        directory: str | os.PathLike | None = None,
        keep: int | None = None,
    ):
        super().__init__()
        self.cycle_ends = CycleEnds(cycle_steps)
        if keep is not None and (_whole_number(keep) is None or keep < 1):
            raise ValueError(f"keep must be a whole number >= 1 or None; got {keep!r}.")
        self.cycle_steps = cycle_steps
        self.directory = None if directory is None else os.fspath(directory)
        self.store = MemoryStore() if directory is None else FolderStore(directory)
        self.keep = keep
        self.snapshots: list[Snapshot] = []
        self._last_seen_step: int | None = None

    def is_cycle_end(self, step: int) -> bool:
        """Whether a cycle ends after ``step`` updates."""
        return step in self.cycle_ends

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._last_seen_step = _current_step(self.model.optimizer)
        self.snapshots = self.store.open(self.model, self._last_seen_step, self.snapshots)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = _current_step(self.model.optimizer)
        previous, self._last_seen_step = self._last_seen_step, step
        missed = [] if previous is None else self.cycle_ends.between(previous + 1, step - 1)
        if missed:
            warnings.warn(
                f"SnapshotEnsemble missed the cycle end(s) at step(s) {missed}: they fell "
                "inside one compiled call (steps_per_execution > 1). Make cycles end on "
                "epoch boundaries or on multiples of steps_per_execution.",
                stacklevel=2,
            )
        if not self.is_cycle_end(step) or any(s.step == step for s in self.snapshots):
            return
        self.snapshots.append(self.store.take(self.model, step))
        while self.keep is not None and len(self.snapshots) > self.keep:
            self.store.drop(self.snapshots.pop(0))
        self.store.record(self.model, self.snapshots)

    def _members(self, model: keras.Model | None) -> list[tuple[Snapshot, keras.Model]]:
        if not self.snapshots:
            raise ValueError(
                "No snapshot yet: train past the end of a cycle (cycle_steps="
                f"{self.cycle_steps!r}) first."
            )
        return members(self.snapshots, self.model if model is None else model)

    def predict(self, x: Any, batch_size: int | None = None, model: keras.Model | None = None):
        """The mean of the snapshots' predictions on ``x``.

        The trained model is left untouched: each snapshot is loaded into a clone.

        Args:
            x: inputs, as for ``model.predict``.
            batch_size: as for ``model.predict``.
            model: the architecture to load the snapshots into; defaults to the
                model the callback trained (a Functional or Sequential model).

        Returns:
            The element-wise mean of the snapshots' predictions, a NumPy array.

        Raises:
            ValueError: if no snapshot has been taken yet.
        """
        return mean_prediction(self._members(model), x, batch_size=batch_size)

    def ensemble(self, model: keras.Model | None = None) -> keras.Model:
        """A Keras model that averages the snapshots' outputs.

        ``ensemble(x) = mean over snapshots s of model_s(x)`` (``keras.layers.Average``);
        it can be evaluated, saved and served like any model.

        Args:
            model: the architecture, as for :meth:`predict`.

        Returns:
            A functional ``keras.Model`` with the model's inputs and one output.

        Raises:
            ValueError: if no snapshot has been taken yet, or the model has more
                than one output.
        """
        model = self.model if model is None else model
        if len(model.outputs) != 1:
            raise ValueError(
                f"ensemble() needs a model with one output; this one has {len(model.outputs)}. "
                "Use predict() and average each output yourself."
            )
        return averaging_model(model, self._members(model))
