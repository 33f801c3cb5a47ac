"""Every loss jits, and gives the same values with the batch sharded over 8 CPU devices."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vtg_jax import losses as L

B, T, V = 8, 5, 16


def _inputs():
    rng = np.random.default_rng(0)
    f32 = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)  # noqa: E731
    lengths = np.array([5, 3, 1, 0, 4, 5, 2, 5])  # includes an empty row
    return {
        "logits": f32(B, T, V),
        "ref_logits": f32(B, T, V),
        "teacher_logits": f32(B, T, V),
        "tokens": jnp.asarray(rng.integers(0, V, size=(B, T)), jnp.int32),
        "old_logp": f32(B, T) * 0.1 - 2.0,
        "adv": f32(B),
        "mask": jnp.asarray(np.arange(T)[None] < lengths[:, None]),
    }


TIME_MASK = jnp.asarray(np.arange(V) % 3 == 0)


def _all_losses(x):
    lg, tok, mask = x["logits"], x["tokens"], x["mask"]
    logp, ent = L.token_logprobs_and_entropy(lg, tok, 0.9, chunk_size=2)
    ref_logp = L.token_logprobs(x["ref_logits"], tok, chunk_size=2)
    tea_logp = L.token_logprobs(x["teacher_logits"], tok)
    k3 = L.kl_estimate(logp, ref_logp, "k3")
    out = {"logp": logp, "entropy": ent, "k3": k3}
    for mode in L.AGGREGATIONS:
        out[f"agg/{mode}"] = L.aggregate(ent, mask, mode)
    out["pg"], m = L.policy_gradient_loss(logp, x["old_logp"], x["adv"], mask, 0.2, 0.28, kl_penalty=k3,
                                          kl_coef=0.04, dual_clip=3.0)
    out.update({f"m/{k}": v for k, v in m.items()})
    out["gspo"], _ = L.policy_gradient_loss(logp, x["old_logp"], x["adv"], mask, aggregation="seq-mean-token-mean",
                                            ratio_level="sequence")
    out["exact_kl"] = L.exact_kl(lg, x["ref_logits"], chunk_size=2)
    out["subset_kl"] = L.subset_kl(lg, x["ref_logits"], TIME_MASK)
    out["token_aware_kl"] = L.token_aware_kl(lg, x["ref_logits"], TIME_MASK, chunk_size=3)
    out["ta_est"] = L.token_aware_kl_estimate(logp, ref_logp, tok, TIME_MASK)
    out["opd_rewards"] = L.opd_token_rewards(logp, tea_logp, mask)
    out["opd0"], _ = L.opd_loss(logp, x["old_logp"], tea_logp, mask)
    out["opd1"], _ = L.opd_loss(logp, x["old_logp"], tea_logp, mask, gamma=1.0, eps_low=0.2, eps_high=0.2,
                                aggregation="seq-mean-token-sum")
    out["fkd"], _ = L.op_fkd_loss(lg, x["teacher_logits"], mask, chunk_size=2)
    ids, lps = L.teacher_topk(x["teacher_logits"], 4)
    out["topk"] = L.topk_forward_kl(lg, ids, lps, "tail")
    out["jsd"] = L.generalized_jsd(lg, x["teacher_logits"], 0.5, chunk_size=2)
    out["grad_pg"] = jax.grad(
        lambda z: L.policy_gradient_loss(L.token_logprobs(z, tok, chunk_size=2), x["old_logp"], x["adv"], mask)[0]
    )(lg)
    return out


def test_all_losses_jit_and_match_under_batch_sharding():
    assert len(jax.devices()) == 8
    x = _inputs()
    fn = jax.jit(_all_losses)
    plain = fn(x)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharded_x = {k: jax.device_put(v, NamedSharding(mesh, P("data"))) for k, v in x.items()}
    sharded = fn(sharded_x)
    assert sharded["logp"].sharding.spec[0] == "data" or len(sharded["logp"].sharding.device_set) == 8
    for k in plain:
        a, b = np.asarray(plain[k]), np.asarray(sharded[k])
        assert np.isfinite(a).all(), k
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=k)
