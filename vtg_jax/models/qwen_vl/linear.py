"""`Linear`: `nnx.Linear` (same parameters, same forward numerics) with a layout-aware backward pass.

For y = x @ W with x [..., din] the weight gradient is dW = x^T dy, a contraction over the token axis,
which is the major (row) axis of both operands. XLA:CPU's matmul kernels want the contracted axis
minor on the left operand, so autodiff's dot makes XLA materialise a transpose of one [tokens, *]
operand, and it often picks the larger one (for the lm_head, the [tokens, vocab] logits gradient;
in the MLPs, the [tokens, intermediate] activations): a full extra read+write of the biggest
activation, about 10% of a CPU training step. The custom VJP below transposes the *smaller* of
x [tokens, din] and dy [tokens, dout] explicitly (computing dW^T when dy is the smaller one), which
is the same sum of products, on every backend.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


@jax.custom_vjp
def linear_matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """x [..., din] @ w [din, dout], exactly `nnx.Linear`'s dot_general in the forward pass."""
    return jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))


def _fwd(x, w):
    return linear_matmul(x, w), (x, w)


def _bwd(res, g):
    x, w = res
    din, dout = w.shape
    dx = jax.lax.dot_general(g, w, (((g.ndim - 1,), (1,)), ((), ())))
    x2, g2 = x.reshape(-1, din), g.reshape(-1, dout)
    if din <= dout:
        dw = jnp.matmul(x2.T, g2)
    else:
        dw = jnp.matmul(g2.T, x2).T
    return dx.astype(x.dtype), dw.astype(w.dtype)


linear_matmul.defvjp(_fwd, _bwd)


class Linear(nnx.Linear):
    """`nnx.Linear` whose matmul is `linear_matmul` (identical parameters and forward numerics)."""

    def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
        if out_sharding is not None or self.preferred_element_type is not None or self.precision is not None:
            return super().__call__(inputs, out_sharding=out_sharding)
        kernel = self.kernel[...]
        bias = self.bias[...] if self.bias is not None else None
        inputs, kernel, bias = self.promote_dtype((inputs, kernel, bias), dtype=self.dtype)
        y = linear_matmul(inputs, kernel)
        if bias is not None:
            y += jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
        return y
