"""lrtools.schedules against their formulas, the built-ins they claim to equal,
properties that must hold for any arguments, serialization, and bad input.

These tests run on whichever Keras backend is active; CI runs them on
TensorFlow and again with KERAS_BACKEND=jax.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lrtools import schedules as S

RTOL = 2e-6  # float32 precision, relative ...
ATOL_SCALE = 4e-7  # ... and absolute, relative to the largest rate of the run


def rates(schedule, steps) -> np.ndarray:
    """The schedule's rates at ``steps``, as float64 numpy."""
    return np.asarray(keras.ops.convert_to_numpy(schedule(np.asarray(steps))), dtype=np.float64)


def keras_rates(schedule, steps, compile_on_jax=True) -> np.ndarray:
    """Keras's built-in schedules take one scalar step at a time (they branch with
    ``ops.cond``); on JAX, compile the call once instead of running a thousand
    eager ``cond``s, which takes minutes."""
    if keras.backend.backend() == "jax" and compile_on_jax:
        import jax

        schedule = jax.jit(schedule)
    return np.array([float(keras.ops.convert_to_numpy(schedule(t))) for t in steps])


def assert_rates(actual, expected):
    expected = np.asarray(expected, dtype=np.float64)
    atol = ATOL_SCALE * float(np.max(np.abs(expected)))
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=atol)


# --------------------------------------------------------------------------- references
# Each reference is written independently of lrtools, following the recursive or
# closed form of the library the schedule claims to match.


def torch_step_lr(lr, gamma, step_size, n):
    """PyTorch StepLR's chainable form: multiply by gamma whenever t % step_size == 0."""
    out, current = [], lr
    for t in range(n):
        if t > 0 and t % step_size == 0:
            current *= gamma
        out.append(current)
    return np.array(out)


def torch_multistep_lr(lr, milestones, gamma, n):
    out, current = [], lr
    for t in range(n):
        current *= gamma ** milestones.count(t)
        out.append(current)
    return np.array(out)


def torch_linear_lr(lr, start_factor, end_factor, total_iters, n):
    """PyTorch LinearLR's recursive update, with lr = base * start_factor at t=0."""
    out, current = [], lr * start_factor
    for t in range(n):
        if 0 < t <= total_iters:
            current *= 1.0 + (end_factor - start_factor) / (
                total_iters * start_factor + (t - 1) * (end_factor - start_factor)
            )
        out.append(current)
    return np.array(out)


def sgdr_reference(lr, eta_min, t0, t_mult, m_mul, n):
    """Walk the cycles one by one in exact integer/float arithmetic."""
    out, start, length, cycle = [], 0.0, float(t0), 0
    for t in range(n):
        while t >= start + length:
            start += length
            length *= t_mult
            cycle += 1
        frac = (t - start) / length
        out.append(eta_min + (lr - eta_min) * m_mul**cycle * (1 + math.cos(math.pi * frac)) / 2)
    return np.array(out)


def torch_cyclic_lr(base, top, step_size, mode, gamma, n):
    """PyTorch CyclicLR.get_lr with step_size_up = step_size_down."""
    total, ratio = 2.0 * step_size, 0.5
    out = []
    for t in range(n):
        cycle = math.floor(1 + t / total)
        x = 1.0 + t / total - cycle
        scale = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
        amp = (top - base) * scale
        if mode == "triangular":
            out.append(base + amp)
        elif mode == "triangular2":
            out.append(base + amp / (2.0 ** (cycle - 1)))
        else:
            out.append(base + amp * gamma**t)
    return np.array(out)


def torch_one_cycle(max_lr, total, pct, div, final_div, strategy, three_phase, n, momenta=None):
    """PyTorch OneCycleLR.get_lr; ``momenta=(base, max)`` returns momenta instead."""
    initial = max_lr / div
    low = initial / final_div
    values = {"initial": initial, "max": max_lr, "min": low}
    if momenta is not None:
        values = {"initial": momenta[1], "max": momenta[0], "min": momenta[1]}
    if three_phase:
        phases = [
            (float(pct * total) - 1, "initial", "max"),
            (float(2 * pct * total) - 2, "max", "initial"),
            (total - 1, "initial", "min"),
        ]
        if momenta is not None:
            phases[2] = (total - 1, "initial", "initial")
    else:
        phases = [(float(pct * total) - 1, "initial", "max"), (total - 1, "max", "min")]

    def anneal(a, b, p):
        if strategy == "cos":
            return b + (a - b) / 2.0 * (math.cos(math.pi * p) + 1)
        return (b - a) * p + a

    out = []
    for t in range(n):
        start = 0.0
        for i, (end, a, b) in enumerate(phases):
            if t <= end or i == len(phases) - 1:
                out.append(anneal(values[a], values[b], (t - start) / (end - start)))
                break
            start = end
    return np.array(out)


# --------------------------------------------------------------------------- whole runs

N = 1000
STEPS = np.arange(N)


def test_constant():
    assert_rates(rates(S.Constant(0.03), STEPS), np.full(N, 0.03))


@pytest.mark.parametrize("drop, step_size", [(0.5, 100), (0.1, 7), (1.0, 3)])
def test_step_decay_matches_pytorch_steplr(drop, step_size):
    expected = torch_step_lr(0.1, drop, step_size, N)
    assert_rates(rates(S.StepDecay(0.1, drop, step_size), STEPS), expected)


def test_multistep_decay_matches_pytorch_multisteplr():
    milestones = [100, 350, 351, 800]
    expected = torch_multistep_lr(0.2, milestones, 0.3, N)
    assert_rates(rates(S.MultiStepDecay(0.2, milestones, gamma=0.3), STEPS), expected)


@pytest.mark.parametrize("staircase", [False, True])
@pytest.mark.parametrize("decay_rate, decay_steps", [(0.96, 100), (0.5, 1), (math.exp(-0.01), 1)])
def test_exponential_decay_matches_keras(decay_rate, decay_steps, staircase):
    ours = S.ExponentialDecay(0.1, decay_rate, decay_steps, staircase)
    builtin = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps, decay_rate, staircase)
    assert_rates(rates(ours, STEPS), keras_rates(builtin, STEPS))
    # The articles' lr0 * exp(-k t) form.
    if decay_steps == 1 and not staircase and decay_rate == math.exp(-0.01):
        assert_rates(rates(ours, STEPS), 0.1 * np.exp(-0.01 * STEPS))


@pytest.mark.parametrize("staircase", [False, True])
def test_time_decay_matches_keras_inverse_time_decay(staircase):
    ours = S.TimeDecay(0.1, decay_rate=0.5, decay_steps=30, staircase=staircase)
    builtin = keras.optimizers.schedules.InverseTimeDecay(0.1, 30, 0.5, staircase)
    assert_rates(rates(ours, STEPS), keras_rates(builtin, STEPS))
    if not staircase:  # computed from t, not compounded: lr0 / (1 + k t)
        assert_rates(rates(ours, STEPS), 0.1 / (1 + 0.5 * STEPS / 30))


@pytest.mark.parametrize("final_lr", [0.0, 0.02])
def test_linear_decay_matches_pytorch_linearlr(final_lr):
    # LinearLR(start_factor=1, end_factor=final/initial, total_iters=T) on a base rate of 0.1.
    expected = torch_linear_lr(0.1, 1.0, final_lr / 0.1, 400, N)
    assert_rates(rates(S.LinearDecay(0.1, 400, final_lr), STEPS), expected)


@pytest.mark.parametrize("power, final_lr", [(1.0, 0.0), (2.0, 0.001), (0.5, 0.01)])
def test_polynomial_decay_matches_keras(power, final_lr):
    ours = S.PolynomialDecay(0.1, 600, final_lr=final_lr, power=power)
    builtin = keras.optimizers.schedules.PolynomialDecay(0.1, 600, final_lr, power, cycle=False)
    # Keras's PolynomialDecay returns NaN past decay_steps under jax.jit when power < 1
    # (seen with Keras 3.15), so its reference is computed eagerly.
    assert_rates(rates(ours, STEPS), keras_rates(builtin, STEPS, compile_on_jax=False))


def test_polynomial_decay_of_power_one_is_linear_decay():
    assert_rates(rates(S.PolynomialDecay(0.1, 300), STEPS), rates(S.LinearDecay(0.1, 300), STEPS))


@pytest.mark.parametrize("final_lr", [0.0, 0.01])
def test_cosine_decay_matches_keras_and_formula(final_lr):
    ours = S.CosineDecay(0.1, 700, final_lr)
    builtin = keras.optimizers.schedules.CosineDecay(0.1, 700, alpha=final_lr / 0.1)
    assert_rates(rates(ours, STEPS), keras_rates(builtin, STEPS))
    formula = final_lr + (0.1 - final_lr) * 0.5 * (1 + np.cos(np.pi * np.minimum(STEPS, 700) / 700))
    assert_rates(rates(ours, STEPS), formula)


@pytest.mark.parametrize(
    "t_mul, m_mul, final_lr", [(1.0, 1.0, 0.0), (2.0, 0.5, 0.01), (1.5, 0.8, 0.0), (3.0, 1.0, 0.01)]
)
def test_cosine_restarts_matches_exact_cycle_walk(t_mul, m_mul, final_lr):
    ours = S.CosineRestarts(0.1, 10, t_mul=t_mul, m_mul=m_mul, final_lr=final_lr)
    assert_rates(rates(ours, STEPS), sgdr_reference(0.1, final_lr, 10, t_mul, m_mul, N))


@pytest.mark.parametrize("t_mul, m_mul, final_lr", [(1.0, 1.0, 0.0), (2.0, 0.5, 0.01)])
def test_cosine_restarts_matches_keras(t_mul, m_mul, final_lr):
    ours = S.CosineRestarts(0.1, 10, t_mul=t_mul, m_mul=m_mul, final_lr=final_lr)
    builtin = keras.optimizers.schedules.CosineDecayRestarts(
        0.1, 10, t_mul=t_mul, m_mul=m_mul, alpha=final_lr / 0.1
    )
    # Keras divides the global step by T0 in float32 before splitting off the cycle,
    # which costs it about 1e-5 relative at step 1000; the exact walk above holds
    # ours to 2e-6.
    np.testing.assert_allclose(
        rates(ours, STEPS), keras_rates(builtin, STEPS), rtol=3e-5, atol=4e-7 * 0.1
    )


def test_cosine_restarts_starts_every_cycle_at_its_peak():
    # Keras's CosineDecayRestarts rounds log(81)/log(3) below 4 and so puts step 400
    # (the start of cycle 4 with T0=10, t_mul=3) at the end of cycle 3. Ours must not.
    ours = S.CosineRestarts(0.1, 10, t_mul=3.0, final_lr=0.01)
    starts = [0, 10, 40, 130, 400, 1210]
    assert_rates(rates(ours, starts), np.full(len(starts), 0.1))


@pytest.mark.parametrize(
    "mode, gamma", [("triangular", 1.0), ("triangular2", 1.0), ("exp_range", 0.997)]
)
def test_cyclic_lr_matches_pytorch_cycliclr(mode, gamma):
    ours = S.CyclicLR(0.001, 0.006, step_size=50, mode=mode, gamma=gamma)
    assert_rates(rates(ours, STEPS), torch_cyclic_lr(0.001, 0.006, 50, mode, gamma, N))


@pytest.mark.parametrize("strategy", ["cos", "linear"])
@pytest.mark.parametrize("three_phase", [False, True])
@pytest.mark.parametrize("total, pct", [(1000, 0.3), (937, 0.25), (100, 0.45)])
def test_one_cycle_matches_pytorch_onecyclelr(strategy, three_phase, total, pct):
    ours = S.OneCycle(0.1, total, pct_start=pct, anneal_strategy=strategy, three_phase=three_phase)
    steps = np.arange(total)
    expected = torch_one_cycle(0.1, total, pct, 25.0, 1e4, strategy, three_phase, total)
    assert_rates(rates(ours, steps), expected)
    momenta = keras.ops.convert_to_numpy(ours.momentum(steps, 0.85, 0.95))
    expected_momenta = torch_one_cycle(
        0.1, total, pct, 25.0, 1e4, strategy, three_phase, total, momenta=(0.85, 0.95)
    )
    np.testing.assert_allclose(momenta, expected_momenta, rtol=RTOL, atol=1e-7)


def test_one_cycle_stays_at_its_final_rate_after_the_run():
    sched = S.OneCycle(0.1, 100)
    assert_rates(rates(sched, [99, 100, 5000]), np.full(3, sched.min_lr))


@pytest.mark.parametrize("initial_lr, final_fraction", [(0.0, 0.0), (0.001, 0.1)])
def test_warmup_cosine_matches_keras_cosine_decay_with_warmup(initial_lr, final_fraction):
    ours = S.Warmup(S.CosineDecay(0.2, 800, final_lr=0.2 * final_fraction), 100, initial_lr)
    builtin = keras.optimizers.schedules.CosineDecay(
        initial_lr, 800, alpha=final_fraction, warmup_target=0.2, warmup_steps=100
    )
    assert_rates(rates(ours, STEPS), keras_rates(builtin, STEPS))


def test_warmup_accepts_a_number():
    assert_rates(rates(S.Warmup(0.1, 10), [0, 5, 10, 500]), [0.0, 0.05, 0.1, 0.1])


@pytest.mark.parametrize("decay", ["linear", "cosine", "sqrt"])
def test_warmup_stable_decay_formula(decay):
    sched = S.WarmupStableDecay(0.1, 100, 600, 200, final_lr=0.001, decay=decay)
    shape = {
        "linear": lambda p: 1 - p,
        "cosine": lambda p: (1 + np.cos(np.pi * p)) / 2,
        "sqrt": lambda p: 1 - np.sqrt(p),
    }[decay]
    p = np.clip((STEPS - 700) / 200, 0, 1)
    expected = np.where(STEPS < 100, 0.1 * STEPS / 100, 0.001 + (0.1 - 0.001) * shape(p))
    assert_rates(rates(sched, STEPS), expected)


def test_warmup_stable_decay_without_warmup_starts_at_peak():
    assert float(rates(S.WarmupStableDecay(0.1, 0, 10, 10), [0])[0]) == pytest.approx(0.1)


def test_sequential_matches_optax_join_schedules():
    first, second, third = S.LinearDecay(0.1, 100), S.CosineDecay(0.05, 300), S.Constant(0.001)
    sched = S.Sequential([first, second, third], boundaries=[100, 400])
    expected = np.concatenate(
        [rates(first, np.arange(100)), rates(second, np.arange(300)), np.full(N - 400, 0.001)]
    )
    assert_rates(rates(sched, STEPS), expected)


def test_scaled_multiplies_and_follows_its_factor():
    base = S.CosineDecay(0.1, 500)
    sched = S.Scaled(base, factor=0.5)
    assert_rates(rates(sched, STEPS), 0.5 * rates(base, STEPS))
    sched.factor.assign(0.1)
    assert_rates(rates(sched, STEPS), 0.1 * rates(base, STEPS))


ALL_SCHEDULES = {
    "constant": lambda: S.Constant(0.05),
    "step": lambda: S.StepDecay(0.1, 0.5, 40),
    "multistep": lambda: S.MultiStepDecay(0.1, [50, 120]),
    "exponential": lambda: S.ExponentialDecay(0.1, 0.9, 10, staircase=True),
    "time": lambda: S.TimeDecay(0.1, 0.5, 10),
    "linear": lambda: S.LinearDecay(0.1, 150, 0.001),
    "polynomial": lambda: S.PolynomialDecay(0.1, 150, 0.001, power=2.0),
    "cosine": lambda: S.CosineDecay(0.1, 150, 0.001),
    "restarts": lambda: S.CosineRestarts(0.1, 20, 2.0, 0.7, 0.001),
    "cyclic": lambda: S.CyclicLR(0.001, 0.1, 25, "triangular2"),
    "exp_range": lambda: S.CyclicLR(0.001, 0.1, 25, "exp_range", gamma=0.99),
    "one_cycle": lambda: S.OneCycle(0.1, 200, three_phase=True),
    "warmup": lambda: S.Warmup(S.ExponentialDecay(0.1, 0.95, 5), 20, 0.001),
    "wsd": lambda: S.WarmupStableDecay(0.1, 20, 100, 50, decay="sqrt"),
    "sequential": lambda: S.Sequential([0.01, S.CosineDecay(0.1, 100)], [30]),
    "scaled": lambda: S.Scaled(S.CyclicLR(0.001, 0.1, 25), 0.3),
}


@pytest.mark.parametrize("name", sorted(ALL_SCHEDULES))
def test_scalar_and_array_steps_agree(name):
    sched = ALL_SCHEDULES[name]()
    steps = np.arange(250)
    scalar = [float(keras.ops.convert_to_numpy(sched(int(t)))) for t in steps[::7]]
    assert rates(sched, steps).shape == (250,)
    assert_rates(rates(sched, steps)[::7], scalar)
    # An integer tensor step, as Keras passes optimizer.iterations.
    as_int = keras.ops.convert_to_tensor(steps, dtype="int64")
    assert_rates(rates(sched, as_int), rates(sched, steps))


# --------------------------------------------------------------------------- serialization


@pytest.mark.parametrize("name", sorted(ALL_SCHEDULES))
def test_serialization_round_trip(name):
    sched = ALL_SCHEDULES[name]()
    config = keras.saving.serialize_keras_object(sched)
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(sched)
    assert restored.get_config() == sched.get_config()
    assert_rates(rates(restored, np.arange(300)), rates(sched, np.arange(300)))
    assert repr(restored) == repr(sched)


def _tiny_model(schedule):
    # A float64 weight (where the backend allows it), so that each update is measured
    # well below the rates' float32 precision.
    layer = keras.layers.Dense(1, use_bias=False, dtype="float64")
    model = keras.Sequential([keras.Input((1,)), layer])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule), loss="mae")
    return model


@pytest.mark.parametrize("name", sorted(ALL_SCHEDULES))
def test_keras_model_saves_and_reloads_its_schedule_at_the_same_step(name, tmp_path):
    sched = ALL_SCHEDULES[name]()
    if name == "scaled":
        sched.factor.assign(0.25)
    model = _tiny_model(sched)
    x, y = np.ones((8, 1), "float32"), np.zeros((8, 1), "float32")
    model.fit(x, y, batch_size=1, epochs=3, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer.learning_rate) is not float
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 24
    reloaded_schedule = loaded.optimizer._learning_rate
    assert type(reloaded_schedule) is type(sched)
    assert reloaded_schedule.get_config() == sched.get_config()
    assert float(loaded.optimizer.learning_rate) == pytest.approx(
        float(model.optimizer.learning_rate), rel=1e-6
    )


# --------------------------------------------------------------------------- inside model.fit


@pytest.mark.parametrize("name", sorted(ALL_SCHEDULES))
def test_schedule_drives_every_update_inside_fit(name):
    """With loss |w| and w > 0 the gradient is 1, so step t moves w by exactly lr(t)."""
    sched = ALL_SCHEDULES[name]()
    model = _tiny_model(sched)
    model.layers[0].kernel.assign(np.full((1, 1), 100.0))
    seen = [100.0]

    def read_weight(batch, logs):
        # On JAX, fit keeps the state outside the variables until asked to sync.
        getattr(model, "jax_state_sync", lambda: None)()
        seen.append(float(keras.ops.convert_to_numpy(model.layers[0].kernel)[0, 0]))

    record = keras.callbacks.LambdaCallback(on_train_batch_end=read_weight)
    x, y = np.ones((60, 1), "float32"), np.zeros((60, 1), "float32")
    model.fit(x, y, batch_size=1, epochs=2, shuffle=False, verbose=0, callbacks=[record])
    moves = -np.diff(np.asarray(seen))
    if keras.ops.convert_to_numpy(model.layers[0].kernel).dtype == np.float64:
        np.testing.assert_allclose(moves, rates(sched, np.arange(120)), rtol=1e-5, atol=1e-10)
    else:  # JAX keeps float32 unless jax_enable_x64 is set: two ulps of 100 per move
        np.testing.assert_allclose(moves, rates(sched, np.arange(120)), rtol=1e-3, atol=2e-5)


# --------------------------------------------------------------------------- properties


positive_rate = st.floats(1e-6, 10.0)
fraction = st.floats(0.01, 1.0)
step_count = st.integers(1, 200)
steps_strategy = st.lists(st.integers(0, 3000), min_size=1, max_size=30)


def _is_non_increasing(values):
    return np.all(np.diff(values) <= 1e-7 * np.abs(values[:-1]) + 1e-12)


@settings(max_examples=40, deadline=None)
@given(
    lr=positive_rate,
    drop=fraction,
    step_size=step_count,
    decay_steps=step_count,
    power=st.floats(0.1, 5.0),
    final_fraction=st.floats(0.0, 1.0),
)
def test_decays_never_increase_and_stay_in_bounds(
    lr, drop, step_size, decay_steps, power, final_fraction
):
    final = lr * final_fraction
    steps = np.arange(0, 1200, 3)
    for sched in [
        S.StepDecay(lr, drop, step_size),
        S.MultiStepDecay(lr, [step_size, step_size + decay_steps], gamma=drop),
        S.ExponentialDecay(lr, drop, decay_steps),
        S.TimeDecay(lr, drop, decay_steps),
        S.LinearDecay(lr, decay_steps, final),
        S.PolynomialDecay(lr, decay_steps, final, power),
        S.CosineDecay(lr, decay_steps, final),
    ]:
        values = rates(sched, steps)
        assert _is_non_increasing(values), sched
        assert np.all(values <= lr * (1 + 1e-6)) and np.all(values >= -1e-12), sched


@settings(max_examples=40, deadline=None)
@given(
    base=st.floats(1e-5, 0.1),
    span=st.floats(1.01, 100.0),
    step_size=st.integers(1, 60),
    cycles=st.integers(1, 5),
    offset=st.integers(0, 119),
)
def test_triangular_cycle_repeats_with_its_period_and_stays_within_bounds(
    base, span, step_size, cycles, offset
):
    sched = S.CyclicLR(base, base * span, step_size)
    t = np.arange(offset, offset + 4 * step_size)
    np.testing.assert_allclose(
        rates(sched, t + 2 * step_size * cycles), rates(sched, t), rtol=1e-4, atol=1e-9
    )
    values = rates(sched, t)
    assert np.all(values >= base * (1 - 1e-5)) and np.all(values <= base * span * (1 + 1e-5))


@settings(max_examples=40, deadline=None)
@given(
    lr=positive_rate,
    t0=st.integers(1, 50),
    t_mul=st.sampled_from([1.0, 1.5, 2.0, 3.0]),
    m_mul=fraction,
    steps=steps_strategy,
)
def test_restarts_stay_between_final_and_peak(lr, t0, t_mul, m_mul, steps):
    sched = S.CosineRestarts(lr, t0, t_mul, m_mul, final_lr=lr / 10)
    values = rates(sched, steps)
    assert np.all(values >= lr / 10 * (1 - 1e-5)) and np.all(values <= lr * (1 + 1e-5))


@settings(max_examples=40, deadline=None)
@given(
    max_lr=positive_rate,
    total=st.integers(20, 3000),
    pct=st.floats(0.1, 0.45),
    three_phase=st.booleans(),
    steps=steps_strategy,
)
def test_one_cycle_stays_between_its_final_rate_and_its_peak(
    max_lr, total, pct, three_phase, steps
):
    sched = S.OneCycle(max_lr, total, pct_start=pct, three_phase=three_phase)
    values = rates(sched, steps)
    assert np.all(values >= sched.min_lr * (1 - 1e-4)) and np.all(values <= max_lr * (1 + 1e-5))
    momenta = keras.ops.convert_to_numpy(sched.momentum(np.asarray(steps)))
    assert np.all(momenta >= 0.85 - 1e-6) and np.all(momenta <= 0.95 + 1e-6)


@settings(max_examples=40, deadline=None)
@given(lr=positive_rate, warmup=st.integers(1, 300), decay_steps=step_count)
def test_warmup_is_continuous_where_it_hands_over(lr, warmup, decay_steps):
    inner = S.CosineDecay(lr, decay_steps * 10)
    sched = S.Warmup(inner, warmup)
    before, at = rates(sched, [warmup - 1, warmup])
    # The last warm-up step is one increment below the target; the hand-over hits it exactly.
    assert at == pytest.approx(lr, rel=1e-6)
    assert before == pytest.approx(lr * (warmup - 1) / warmup, rel=1e-5, abs=1e-12)
    ramp = rates(sched, np.arange(warmup + 1))
    assert np.all(np.diff(ramp) >= -1e-9 * lr)


@settings(max_examples=40, deadline=None)
@given(lr=positive_rate, boundary=st.integers(1, 500), decay_steps=step_count)
def test_sequential_of_a_constant_and_its_decay_is_continuous(lr, boundary, decay_steps):
    sched = S.Sequential([S.Constant(lr), S.CosineDecay(lr, decay_steps)], [boundary])
    before, at = rates(sched, [boundary - 1, boundary])
    assert before == pytest.approx(at, rel=1e-6)


# --------------------------------------------------------------------------- bad input


BAD_ARGUMENTS = [
    (S.Constant, dict(lr=-0.1), ValueError),
    (S.Constant, dict(lr=float("nan")), ValueError),
    (S.Constant, dict(lr="0.1"), TypeError),
    (S.StepDecay, dict(initial_lr=0.0, drop=0.5, step_size=10), ValueError),
    (S.StepDecay, dict(initial_lr=0.1, drop=1.5, step_size=10), ValueError),
    (S.StepDecay, dict(initial_lr=0.1, drop=0.5, step_size=0), ValueError),
    (S.StepDecay, dict(initial_lr=0.1, drop=0.5, step_size=2.5), ValueError),
    (S.MultiStepDecay, dict(initial_lr=0.1, milestones=[]), ValueError),
    (S.MultiStepDecay, dict(initial_lr=0.1, milestones=[20, 10]), ValueError),
    (S.MultiStepDecay, dict(initial_lr=0.1, milestones=[10], gamma=0.0), ValueError),
    (S.MultiStepDecay, dict(initial_lr=0.1, milestones=10), TypeError),
    (S.ExponentialDecay, dict(initial_lr=0.1, decay_rate=0.0), ValueError),
    (S.ExponentialDecay, dict(initial_lr=0.1, decay_rate=1.1), ValueError),
    (S.ExponentialDecay, dict(initial_lr=-1.0, decay_rate=0.9), ValueError),
    (S.TimeDecay, dict(initial_lr=0.1, decay_rate=-0.5), ValueError),
    (S.TimeDecay, dict(initial_lr=0.1, decay_rate=0.5, decay_steps=0), ValueError),
    (S.LinearDecay, dict(initial_lr=0.1, decay_steps=0), ValueError),
    (S.LinearDecay, dict(initial_lr=0.1, decay_steps=10, final_lr=0.2), ValueError),
    (S.LinearDecay, dict(initial_lr=0.1, decay_steps=10, final_lr=-0.01), ValueError),
    (S.PolynomialDecay, dict(initial_lr=0.1, decay_steps=10, power=0.0), ValueError),
    (S.CosineDecay, dict(initial_lr=0.1, decay_steps=-5), ValueError),
    (S.CosineDecay, dict(initial_lr=float("inf"), decay_steps=5), ValueError),
    (S.CosineRestarts, dict(initial_lr=0.1, first_cycle_steps=0), ValueError),
    (S.CosineRestarts, dict(initial_lr=0.1, first_cycle_steps=10, t_mul=0.5), ValueError),
    (S.CosineRestarts, dict(initial_lr=0.1, first_cycle_steps=10, m_mul=2.0), ValueError),
    (S.CyclicLR, dict(base_lr=0.1, max_lr=0.01, step_size=10), ValueError),
    (S.CyclicLR, dict(base_lr=0.1, max_lr=0.1, step_size=10), ValueError),
    (S.CyclicLR, dict(base_lr=0.0, max_lr=0.1, step_size=10), ValueError),
    (S.CyclicLR, dict(base_lr=0.01, max_lr=0.1, step_size=0), ValueError),
    (S.CyclicLR, dict(base_lr=0.01, max_lr=0.1, step_size=10, mode="triangle"), ValueError),
    (
        S.CyclicLR,
        dict(base_lr=0.01, max_lr=0.1, step_size=10, mode="exp_range", gamma=0),
        ValueError,
    ),
    (S.OneCycle, dict(max_lr=0.1, total_steps=100, pct_start=0.0), ValueError),
    (S.OneCycle, dict(max_lr=0.1, total_steps=100, pct_start=1.0), ValueError),
    (S.OneCycle, dict(max_lr=0.1, total_steps=1), ValueError),
    (S.OneCycle, dict(max_lr=0.1, total_steps=3, pct_start=0.3), ValueError),
    (S.OneCycle, dict(max_lr=0.1, total_steps=100, pct_start=0.6, three_phase=True), ValueError),
    (S.OneCycle, dict(max_lr=0.1, total_steps=100, anneal_strategy="exp"), ValueError),
    (S.OneCycle, dict(max_lr=0.1, total_steps=100, div_factor=0.0), ValueError),
    (S.OneCycle, dict(max_lr=-0.1, total_steps=100), ValueError),
    (S.Warmup, dict(schedule=0.1, warmup_steps=0), ValueError),
    (S.Warmup, dict(schedule=0.1, warmup_steps=10, initial_lr=-1.0), ValueError),
    (S.Warmup, dict(schedule="cosine", warmup_steps=10), TypeError),
    (
        S.WarmupStableDecay,
        dict(peak_lr=0.1, warmup_steps=-1, stable_steps=1, decay_steps=1),
        ValueError,
    ),
    (
        S.WarmupStableDecay,
        dict(peak_lr=0.1, warmup_steps=1, stable_steps=1, decay_steps=0),
        ValueError,
    ),
    (
        S.WarmupStableDecay,
        dict(peak_lr=0.1, warmup_steps=1, stable_steps=1, decay_steps=1, decay="exp"),
        ValueError,
    ),
    (S.Sequential, dict(schedules=[0.1], boundaries=[]), ValueError),
    (S.Sequential, dict(schedules=[0.1, 0.01], boundaries=[]), ValueError),
    (S.Sequential, dict(schedules=[0.1, 0.01, 0.001], boundaries=[20, 10]), ValueError),
    (S.Sequential, dict(schedules=[0.1, 0.01], boundaries=[0]), ValueError),
    (S.Scaled, dict(schedule=0.1, factor=-1.0), ValueError),
]


@pytest.mark.parametrize(
    "cls, kwargs, error", BAD_ARGUMENTS, ids=[f"{c.__name__}-{k}" for c, k, _ in BAD_ARGUMENTS]
)
def test_bad_arguments_raise_clear_errors(cls, kwargs, error):
    with pytest.raises(error) as info:
        cls(**kwargs)
    assert "`" in str(info.value) or "Expected" in str(info.value)


def test_one_cycle_momentum_rejects_momenta_out_of_order():
    with pytest.raises(ValueError, match="base_momentum"):
        S.OneCycle(0.1, 100).momentum(0, base_momentum=0.95, max_momentum=0.85)


def test_docstring_examples_run_as_written():
    import doctest

    import lrtools.schedules

    result = doctest.testmod(lrtools.schedules, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted >= 15
    assert result.failed == 0


# --------------------------------------------------------------------------- safe by default


@pytest.mark.parametrize("name", sorted(ALL_SCHEDULES))
def test_a_negative_step_counts_as_step_zero(name):
    sched = ALL_SCHEDULES[name]()
    at_zero = rates(sched, [0])[0]
    assert_rates(rates(sched, [-1, -7, -10_000]), np.full(3, at_zero))
    assert float(keras.ops.convert_to_numpy(sched(-3))) == pytest.approx(at_zero, rel=1e-6)
    assert float(keras.ops.convert_to_numpy(sched(-2.5))) == pytest.approx(at_zero, rel=1e-6)


def test_every_schedule_says_whether_it_is_a_pure_function_of_the_step():
    for name, make in ALL_SCHEDULES.items():
        assert make().is_pure is (name != "scaled"), name
    scaled = S.Scaled(S.CosineDecay(0.1, 10))
    assert not S.Warmup(scaled, 5).is_pure
    assert not S.Sequential([0.1, scaled], [5]).is_pure
    assert S.Sequential([0.1, S.Warmup(S.CosineDecay(0.1, 10), 5)], [5]).is_pure
    # A schedule from elsewhere is not known to be pure, nor is anything that wraps it.
    builtin = keras.optimizers.schedules.CosineDecay(0.1, 10)
    assert not S.Warmup(builtin, 5).is_pure


def test_config_is_derived_once_in_the_base_class():
    for name in S.__all__:
        cls = getattr(S, name)
        if isinstance(cls, type):
            assert "get_config" not in vars(cls) and "from_config" not in vars(cls), name


@pytest.mark.parametrize(
    "make",
    [
        lambda: S.ExponentialDecay(0.1, 0.9, 10, staircase="False"),
        lambda: S.ExponentialDecay(0.1, 0.9, 10, staircase=1),
        lambda: S.TimeDecay(0.1, 0.5, 10, staircase=np.bool_(True)),
        lambda: S.OneCycle(0.1, 100, three_phase="yes"),
        lambda: S.OneCycle(0.1, 100, three_phase=0),
    ],
)
def test_flags_must_be_real_booleans(make):
    with pytest.raises(TypeError, match="True or False"):
        make()


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda: S.Warmup(S.CosineDecay(0.1, 100), 10, initial_lr=0.2), ValueError),
        (lambda: S.Warmup(0.01, 10, initial_lr=0.05), ValueError),
        (lambda: S.MultiStepDecay(0.1, [True, 20]), TypeError),
        (lambda: S.CyclicLR(0.01, 0.1, 10, mode=3), TypeError),
        (lambda: S.OneCycle(0.1, 100, anneal_strategy=None), TypeError),
        (lambda: S.WarmupStableDecay(0.1, 1, 1, 1, decay=1), TypeError),
        (lambda: S.Sequential([0.1, 0.01], boundaries=5), TypeError),
        (lambda: S.Sequential([0.1, 0.01], boundaries=["5"]), TypeError),
        (lambda: S.CosineRestarts(0.1, 10, t_mul="2"), TypeError),
        (lambda: S.OneCycle(0.1, 100).momentum(0, base_momentum="0.85"), TypeError),
    ],
)
def test_documented_domains_and_types_are_enforced(make, error):
    with pytest.raises(error, match="`"):
        make()


def test_warmup_may_start_at_its_target_and_numbers_of_any_real_type_are_schedules():
    assert_rates(rates(S.Warmup(S.Constant(0.7), 10, initial_lr=0.7), [0, 5, 20]), [0.7] * 3)
    assert_rates(rates(S.as_schedule(np.float32(0.25)), [0, 9]), [0.25, 0.25])


@pytest.mark.parametrize("three_phase", [False, True])
@pytest.mark.parametrize("total, pct", [(12, 0.1), (7, 0.4), (11, 0.2)])
def test_one_cycle_phases_that_end_between_steps_match_pytorch(total, pct, three_phase):
    # With total=12, pct=0.1 the phases end at 0.2, 0.4 and 11: the second holds no step.
    ours = S.OneCycle(0.1, total, pct_start=pct, three_phase=three_phase)
    expected = torch_one_cycle(0.1, total, pct, 25.0, 1e4, "cos", three_phase, total)
    assert_rates(rates(ours, np.arange(total)), expected)


# --------------------------------------------------------------------------- very long runs
# Past 2**24 steps float32 can no longer hold every whole step (at 10**9 they are 64
# apart), so the position inside a cycle must be found in integers.

LONG = 10**9


def restarts_at(lr, final, t0, t_mul, m_mul, steps):
    """Walk the cycles in float64 up to each step, as sgdr_reference does (in integers
    when every cycle has the same length)."""
    out = []
    for t in steps:
        start, length, cycle = 0.0, float(t0), 0
        if t_mul == 1:
            cycle, start = t // t0, t // t0 * t0
        while t >= start + length:
            start, length, cycle = start + length, length * t_mul, cycle + 1
        frac = (t - start) / length
        out.append(final + (lr - final) * m_mul**cycle * (1 + math.cos(math.pi * frac)) / 2)
    return np.array(out)


def cyclic_at(base, top, step_size, mode, steps):
    """PyTorch CyclicLR's formula in exact integer arithmetic."""
    out = []
    for t in steps:
        cycle = 1 + t // (2 * step_size)
        x = abs((t - 2 * step_size * (cycle - 1)) / step_size - 1)
        scale = 0.5 ** (cycle - 1) if mode == "triangular2" else 1.0
        out.append(base + (top - base) * max(0.0, 1 - x) * scale)
    return np.array(out)


def _near(center, width=300, stride=7):
    return [center + k for k in range(-width, width, stride)]


LONG_RUNS = {
    "cyclic": (
        lambda: S.CyclicLR(0.001, 0.006, 50),
        lambda t: cyclic_at(0.001, 0.006, 50, "triangular", t),
        _near(LONG),
    ),
    "cyclic_long_cycles": (
        lambda: S.CyclicLR(0.001, 0.006, 3 * 10**8, "triangular2"),
        lambda t: cyclic_at(0.001, 0.006, 3 * 10**8, "triangular2", t),
        _near(6 * 10**8) + _near(LONG),
    ),
    "restarts": (
        lambda: S.CosineRestarts(0.1, 100, final_lr=0.01),
        lambda t: restarts_at(0.1, 0.01, 100, 1.0, 1.0, t),
        _near(LONG),
    ),
    "restarts_doubling": (
        lambda: S.CosineRestarts(0.1, 10, t_mul=2.0, m_mul=0.9),
        lambda t: restarts_at(0.1, 0.0, 10, 2.0, 0.9, t),
        _near(10 * (2**27 - 1), width=2000, stride=13),  # around the start of cycle 27
    ),
    "restarts_growing": (
        lambda: S.CosineRestarts(0.1, 7, t_mul=1.5, final_lr=0.001),
        lambda t: restarts_at(0.1, 0.001, 7, 1.5, 1.0, t),
        _near(LONG),
    ),
    "step": (
        lambda: S.StepDecay(0.1, 0.5, 10**8),
        lambda t: 0.1 * 0.5 ** (np.array(t) // 10**8),
        _near(LONG, width=20, stride=1),
    ),
    "multistep": (
        lambda: S.MultiStepDecay(0.1, [LONG + 1, LONG + 3], gamma=0.5),
        lambda t: 0.1 * 0.5 ** np.searchsorted([LONG + 1, LONG + 3], t, side="right"),
        _near(LONG, width=6, stride=1),
    ),
    "exponential_staircase": (
        lambda: S.ExponentialDecay(0.1, 0.5, 10**8, staircase=True),
        lambda t: 0.1 * 0.5 ** (np.array(t) // 10**8),
        _near(LONG, width=20, stride=1),
    ),
    "sequential": (
        lambda: S.Sequential([0.1, S.CyclicLR(0.001, 0.006, 50)], [LONG - 1000]),
        lambda t: cyclic_at(0.001, 0.006, 50, "triangular", np.array(t) - (LONG - 1000)),
        _near(LONG),
    ),
    "one_cycle_linear": (
        lambda: S.OneCycle(0.1, 2 * LONG, pct_start=0.5, anneal_strategy="linear"),
        lambda t: (
            0.004
            + (0.1 - 0.004) * np.minimum(np.array(t) / (LONG - 1), 1)
            - np.maximum(np.array(t) - (LONG - 1), 0) / LONG * (0.1 - 0.0000004)
        ),
        _near(LONG, width=20, stride=1),
    ),
}


def _compiled(schedule):
    """The schedule as a compiled train step sees it, fed the backend's integer step."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(schedule)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(schedule)
    return schedule


@pytest.mark.parametrize("name", sorted(LONG_RUNS))
def test_rates_stay_exact_a_billion_steps_in(name):
    make, reference, steps = LONG_RUNS[name]
    sched, expected = make(), reference(steps)
    assert_rates(rates(sched, steps), expected)
    # As Keras passes it: an integer tensor (int64, or int32 under JAX without x64) ...
    as_int = keras.ops.convert_to_tensor(np.asarray(steps), dtype="int64")
    assert_rates(rates(sched, as_int), expected)
    # ... inside a compiled step, one scalar at a time ...
    step_fn = _compiled(sched)
    some = steps[:: max(1, len(steps) // 8)]
    scalars = [
        float(keras.ops.convert_to_numpy(step_fn(keras.ops.convert_to_tensor(t)))) for t in some
    ]
    assert_rates(scalars, reference(some))
    # ... and through the optimizer's own step counter.
    optimizer = keras.optimizers.SGD(learning_rate=sched)
    optimizer.iterations.assign(steps[-1])
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(
        expected[-1], rel=RTOL, abs=ATOL_SCALE * np.max(np.abs(expected))
    )
