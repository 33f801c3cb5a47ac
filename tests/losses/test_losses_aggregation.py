"""aggregate / masked reductions: hand values, empty masks, NaN in padding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vtg_jax.losses import AGGREGATIONS, aggregate, masked_mean, masked_sum

VALUES = jnp.array([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
MASK = jnp.array([[1, 1, 1, 0], [1, 0, 0, 0]])


def test_hand_values():
    # token-mean: (1+2+3+10)/4.
    np.testing.assert_allclose(aggregate(VALUES, MASK, "token-mean"), 16 / 4)
    # seq-mean-token-mean: (2 + 10)/2.
    np.testing.assert_allclose(aggregate(VALUES, MASK, "seq-mean-token-mean"), 6.0)
    # Dr.GRPO: (6/4 + 10/4)/2 with max_len = T = 4; with max_len = 8: (6/8 + 10/8)/2.
    np.testing.assert_allclose(aggregate(VALUES, MASK, "seq-mean-token-sum-norm"), 2.0)
    np.testing.assert_allclose(aggregate(VALUES, MASK, "seq-mean-token-sum-norm", max_len=8), 1.0)
    np.testing.assert_allclose(aggregate(VALUES, MASK, "seq-mean-token-sum"), 8.0)
    np.testing.assert_allclose(masked_sum(VALUES, MASK), 16.0)
    np.testing.assert_allclose(masked_mean(VALUES, MASK, axis=-1), [2.0, 10.0])


@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_empty_mask_is_zero_not_nan(mode):
    zero_mask = jnp.zeros((2, 4), bool)
    out = aggregate(VALUES, zero_mask, mode)
    assert float(out) == 0.0
    g = jax.grad(lambda v: aggregate(v, zero_mask, mode))(VALUES)
    assert np.all(np.asarray(g) == 0.0)


@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_nan_in_padding_does_not_leak(mode):
    vals = VALUES.at[0, 3].set(jnp.nan).at[1, 1].set(jnp.inf)
    np.testing.assert_allclose(aggregate(vals, MASK, mode), aggregate(VALUES, MASK, mode))


@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_empty_padding_row_does_not_change_loss(mode):
    vals = jnp.concatenate([VALUES, jnp.full((1, 4), 99.0)])
    mask = jnp.concatenate([MASK, jnp.zeros((1, 4), MASK.dtype)])
    np.testing.assert_allclose(aggregate(vals, mask, mode), aggregate(VALUES, MASK, mode))


def test_bad_mode_and_shapes():
    with pytest.raises(ValueError):
        aggregate(VALUES, MASK, "sum")
    with pytest.raises(ValueError):
        aggregate(VALUES[0], MASK[0])


def test_bfloat16_values_reduce_in_float32():
    v = jnp.full((1, 512), 1.0 + 1 / 128, jnp.bfloat16)
    out = aggregate(v, jnp.ones((1, 512)), "seq-mean-token-sum")
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, 512 * (1 + 1 / 128), rtol=1e-6)
