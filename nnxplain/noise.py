"""Portable standard normal noise: a counter-based generator that any ONNX engine runs bit for bit.

The sampling methods (`smoothgrad`, `vargrad`, any method file with `inputs = "noise"`) and `random`
generate their noise inside the compiled graph from the method's `seed`, so the explainer file alone
determines the explanation: no host code, no engine-specific random operator (ONNX's RandomNormal
is seeded differently by every engine, and ONNX Runtime's continues its stream from run to run).

The generator works on integers below 2^24 held in float32 (Mul, Add, Sub, Floor, all exact), not on
uint32 with bit operations: some engines run 32-bit integer arithmetic through float32 or saturate
it (OpenVINO's CPU plugin does both), and ONNX's Bitwise ops need opset 18. The definition, for a
caller in any language (`standard_normal` below is the same in numpy):

    W = 4096, ROUNDS = 20, A = 3371
    element (k, i): sample k = 0..S-1, flat index i = 0..N-1 of one sample (row-major), N <= 2^24
    round keys: for stream j in {0, 1}, d = SHA-512 of the ASCII text "nnxplain-noise/{seed}/{k}/{j}"
                (seed and k in decimal); key[r] = (256 * d[2r] + d[2r+1]) mod W, r = 0..ROUNDS-1
    for each stream j:  L = floor(i / W), R = i mod W
                        repeat for r = 0..ROUNDS-1:  p = A * R
                                                     L, R = p mod W, (L + floor(p / W) + key[r]) mod W
                        u_j = float32(L * 2^-12 + (R + 0.5) * 2^-24)   (the sum rounded to float32)
    z = sqrt(-2 ln u_0) * cos(2 pi u_1)   (float32)

Each round is a Philox-style step on two 12-bit words (a multiply split into its high and low word,
with addition modulo W in place of xor), a bijection of the 24-bit counter for every key. u_0 > 0,
so z is finite. The integers are exact on every engine; log, sqrt and cos differ between engines by
an ulp or so. The same noise is used for every sample of a batch, so an input's explanation does
not depend on the batch it is in.
"""
from __future__ import annotations

import hashlib

import numpy as np

W = 4096
ROUNDS = 20
MULTIPLIER = 3371
MAX_ELEMENTS = 1 << 24
FLOAT = np.float32


def round_keys(seed: int, samples: int) -> np.ndarray:
    """[ROUNDS, 2, samples] int64: the round keys of both streams of every sample."""
    keys = np.zeros((ROUNDS, 2, samples), np.int64)
    for k in range(samples):
        for j in range(2):
            d = hashlib.sha512(f"nnxplain-noise/{int(seed)}/{k}/{j}".encode("ascii")).digest()
            keys[:, j, k] = [(256 * d[2 * r] + d[2 * r + 1]) % W for r in range(ROUNDS)]
    return keys


def check_size(dims, what: str):
    n = int(np.prod(dims, dtype=np.int64))
    if n > MAX_ELEMENTS:
        from .errors import NnxplainError
        raise NnxplainError(f"{what}: the in-graph noise generator counts at most 2^24 elements per sample, "
                            f"the input has {n}; use noise = \"input\" (host-fed noise)")
    return n


def standard_normal(seed: int, samples: int, dims) -> np.ndarray:
    """The generator's values, float32 [samples, *dims] (numpy; the graph computes the same)."""
    dims = [int(d) for d in dims]
    n = check_size(dims, "noise")
    keys = round_keys(seed, samples)
    i = np.arange(n, dtype=np.int64)
    left = np.broadcast_to(i // W, (2, samples, n))
    right = np.broadcast_to(i % W, (2, samples, n))
    for r in range(ROUNDS):
        p = MULTIPLIER * right
        left, right = p % W, (left + p // W + keys[r][:, :, None]) % W
    u = left.astype(FLOAT) * FLOAT(2.0 ** -12) + (right.astype(FLOAT) + FLOAT(0.5)) * FLOAT(2.0 ** -24)
    z = np.sqrt(FLOAT(-2.0) * np.log(u[0])) * np.cos(FLOAT(2 * np.pi) * u[1])
    return z.astype(FLOAT).reshape([samples] + dims)


def emit(e, seed: int, samples: int, dims) -> "gs.Tensor":  # noqa: F821
    """Graph nodes computing standard_normal(seed, samples, dims): float32 [samples, *dims]. `dims`:
    ints, or an int64 tensor holding the dims at run time (an input with dynamic dims: the same
    values as for static dims of that size, since element (k, i) depends on k and i alone; a sample of
    more than 2^24 elements gets NaN noise, which the explanation shows, not silently repeated
    numbers). With static dims every input of these nodes is a constant, so engines that fold
    constants compute it when they load the model: quick for one sample (the `random` baseline),
    slow for many (ONNX Runtime: 40 s for 50 samples of 3x224x224), so the sampling methods pass
    the dims as a tensor (sampling.explain_sampled)."""
    if isinstance(dims, (list, tuple)):
        dims = [int(d) for d in dims]
        count = e.const(np.array(float(check_size(dims, "noise")), FLOAT))
        shape = e.ints([samples] + dims)
    else:
        count = e.Cast(e.ReduceProd(dims, keepdims=1), to=1)  # [1] float32; exact up to 2^24
        count = e.Reshape(count, e.ints([]))
        shape = e.Concat(e.ints([samples]), dims, axis=0)
    keys = round_keys(seed, samples).astype(FLOAT)[:, :, :, None]  # [ROUNDS, 2, samples, 1]
    i = e.Range(e.const(np.array(0.0, FLOAT)), count, e.const(np.array(1.0, FLOAT)))
    inv_w, w = FLOAT(1.0 / W), FLOAT(W)

    def split(t):
        """(t mod W, floor(t / W)) of an exact integer t < 2^24 in float32."""
        high = e.Floor(e.Mul(t, inv_w))
        return e.Sub(t, e.Mul(high, w)), high

    right, left = split(i)
    for r in range(ROUNDS):
        low, high = split(e.Mul(right, FLOAT(MULTIPLIER)))
        right, _ = split(e.Add(e.Add(left, high), e.const(keys[r])))
        left = low
    u = e.Add(e.Mul(left, FLOAT(2.0 ** -12)), e.Mul(e.Add(right, FLOAT(0.5)), FLOAT(2.0 ** -24)))  # [2, S, N]
    u0, u1 = e.op("Split", u, e.ints([1, 1]), axis=0, outputs=2)
    radius = e.Sqrt(e.Mul(e.Log(u0), FLOAT(-2.0)))
    z = e.Mul(radius, e.Cos(e.Mul(u1, FLOAT(2 * np.pi))))
    if not isinstance(dims, list):  # counted at run time: past 2^24 elements the counter is not exact
        z = e.Where(e.Greater(count, FLOAT(MAX_ELEMENTS)), e.const(np.array(np.nan, FLOAT)), z)
    return e.Reshape(z, shape)
