"""The CPU's own limit for `deno task bench`: the same workloads in NumPy (OpenBLAS sgemm, float32),
timed on this machine right after the WebGPU cases, so the table can give ours / NumPy.

Usage: python3 bench/numpy_reference.py KEY... ; prints {"KEY": milliseconds, ...} as JSON. Keys:
  matmul M N K T|N      a[M, K] @ b (b[K, N], or b[N, K] transposed when T)
  layernorm R C fwd|bwd forward, or forward and backward (dx, dgamma, dbeta)
  softmax R C fwd|bwd   over the last axis; backward from an upstream gradient
  gelu N                tanh-approximate GELU of N floats
  chain R C             gelu(x + bias) + residual
  attention B H T D causal|full   forward and backward (dq, dk, dv)
"""

import json
import sys
import time

import numpy as np

rng = np.random.default_rng(0)


def rand(*shape):
    return rng.standard_normal(shape, dtype=np.float32)


def gelu(x):
    return 0.5 * x * (1.0 + np.tanh(np.float32(0.7978845608) * (x + np.float32(0.044715) * x * x * x)))


def workload(key):
    """A function running one repetition of the workload named by `key`."""
    kind, *args = key.split()
    if kind == "matmul":
        m, n, k, t = int(args[0]), int(args[1]), int(args[2]), args[3] == "T"
        a, b = rand(m, k), rand(n, k) if t else rand(k, n)
        return (lambda: a @ b.T) if t else (lambda: a @ b)
    if kind == "layernorm":
        r, c, backward = int(args[0]), int(args[1]), args[2] == "bwd"
        x, g, beta, dy = rand(r, c), rand(c), rand(c), rand(r, c)

        def run():
            mean = x.mean(-1, keepdims=True)
            centred = x - mean
            rstd = 1.0 / np.sqrt((centred * centred).mean(-1, keepdims=True) + np.float32(1e-5))
            xhat = centred * rstd
            y = xhat * g + beta
            if not backward:
                return y
            dxhat = dy * g
            dx = rstd * (dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True))
            return dx, (dy * xhat).sum(0), dy.sum(0)

        return run
    if kind == "softmax":
        r, c, backward = int(args[0]), int(args[1]), args[2] == "bwd"
        x, dy = rand(r, c), rand(r, c)

        def run():
            e = np.exp(x - x.max(-1, keepdims=True))
            p = e / e.sum(-1, keepdims=True)
            return p * (dy - (dy * p).sum(-1, keepdims=True)) if backward else p

        return run
    if kind == "gelu":
        x = rand(int(args[0]))
        return lambda: gelu(x)
    if kind == "chain":
        r, c = int(args[0]), int(args[1])
        x, bias, residual = rand(r, c), rand(c), rand(r, c)
        return lambda: gelu(x + bias) + residual
    if kind == "attention":
        b, h, t, d, causal = int(args[0]), int(args[1]), int(args[2]), int(args[3]), args[4] == "causal"
        q, k, v, do = rand(b, h, t, d), rand(b, h, t, d), rand(b, h, t, d), rand(b, h, t, d)
        scale = np.float32(1.0 / np.sqrt(d))
        mask = np.triu(np.ones((t, t), dtype=bool), 1)

        def run():
            s = (q @ k.transpose(0, 1, 3, 2)) * scale
            if causal:
                s = np.where(mask, np.float32(-np.inf), s)
            e = np.exp(s - s.max(-1, keepdims=True))
            p = e / e.sum(-1, keepdims=True)
            out = p @ v
            dv = p.transpose(0, 1, 3, 2) @ do
            dp = do @ v.transpose(0, 1, 3, 2)
            ds = p * (dp - (dp * p).sum(-1, keepdims=True)) * scale
            return out, ds @ k, ds.transpose(0, 1, 3, 2) @ q, dv

        return run
    raise SystemExit(f"numpy_reference: unknown workload {key!r}")


def best_ms(run, budget=0.5):
    """Best time of one repetition over at least three, for about `budget` seconds, after a warm-up."""
    run()
    best, spent, count = float("inf"), 0.0, 0
    while count < 3 or spent < budget:
        start = time.perf_counter()
        run()
        elapsed = time.perf_counter() - start
        best, spent, count = min(best, elapsed), spent + elapsed, count + 1
    return best * 1000


print(json.dumps({key: best_ms(workload(key)) for key in sys.argv[1:]}))
