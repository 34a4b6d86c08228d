"""The PyTorch half of the side-by-side benchmark (bench/gpu/run.sh runs both halves).

Usage: python3 bench/gpu/torch_side.py --out DIR [--size full|tiny] [--device cuda|cpu] [--only LIST]

For every workload of bench/gpu/workloads.json it computes the inputs from the shared hash streams
(the same float32 values bench/gpu/inputs.ts computes), runs the workload once and saves the outputs
our side is checked against as DIR/<file>.safetensors, then times it: CUDA events around many
repetitions after a warmup, the median of several spans (wall clock on the CPU). Matrix products and
everything else run in float32 with TF32 off. The models are Hugging Face's BertForSequenceClassification,
GPT2ForSequenceClassification and RobertaForSequenceClassification, saved as Hugging Face folders
DIR/model-<size>-<family> for our side to load. DIR/torch.json records the card, the versions and
every time, and any workload that failed here (which is skipped; the exit status is then 1). Needs torch,
transformers and safetensors.
"""

import argparse
import datetime
import json
import math
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

SPEC = json.loads((Path(__file__).resolve().parent / "workloads.json").read_text())
# The hash of inputs.ts: odd multipliers below 2^31 keep every int64 product exact.
MULTIPLIER_A, MULTIPLIER_B, GOLDEN, TWO32 = 0x2C1B3C6D, 0x297A2D39, 0x9E3779B9, 2**32
# Seed of Hugging Face's initialisation and of the noise added to every 1-D parameter (which HF
# initialises to 0 or 1), so that a dropped or misplaced bias shows in the check.
SEED, ONE_D_NOISE = 1234, 0.1
FAMILIES = ("bert", "gpt2", "roberta")
# How long to time: a span of about target_ms, the median of `trials` spans.
TIMING = {
    "full": {"target_ms": 300.0, "trials": 5, "max_reps": 20000},
    "tiny": {"target_ms": 1.0, "trials": 1, "max_reps": 2},
}


def hash32(index: torch.Tensor, stream: int) -> torch.Tensor:
    """The 32-bit hash of inputs.ts over int64 indices."""
    x = (index * MULTIPLIER_A + (stream * GOLDEN) % TWO32) % TWO32
    x = x ^ (x >> 16)
    x = (x * MULTIPLIER_B) % TWO32
    return x ^ (x >> 13)


def stream_values(name: str, shape, device, start: int = 0) -> torch.Tensor:
    """(hash / 2^32 - 0.5) * scale + offset of elements start.., exact in float64, rounded once to float32."""
    s = SPEC["streams"][name]
    index = torch.arange(start, start + math.prod(shape), dtype=torch.int64, device=device)
    u = hash32(index, s["stream"]).to(torch.float64) / TWO32 - 0.5
    return (u * s["scale"] + s["offset"]).to(torch.float32).reshape(shape)


def stream_ints(name: str, count: int, low: int, high: int, device) -> torch.Tensor:
    index = torch.arange(count, dtype=torch.int64, device=device)
    return low + hash32(index, SPEC["streams"][name]["stream"]) % (high - low)


def valid_lengths(batch: int, tokens: int) -> list[int]:
    return [tokens - (b * tokens) // (2 * batch) for b in range(batch)]


class Timer:
    """Times a function that launches one repetition (see the module docstring)."""

    def __init__(self, device: str, target_ms: float, trials: int, max_reps: int):
        self.cuda = device == "cuda"
        self.target_ms, self.trials, self.max_reps = target_ms, trials, max_reps

    def span(self, fn, reps: int) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(reps):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - start) * 1e3

    def measure(self, fn) -> dict:
        for _ in range(3):
            fn()
        if self.cuda:
            torch.cuda.synchronize()
        reps, work = 1, self.span(fn, 1)
        while work < self.target_ms / 8 and reps < self.max_reps:
            reps = min(self.max_reps, reps * (8 if work < self.target_ms / 64 else 2))
            work = self.span(fn, reps)
        reps = min(self.max_reps, max(1, round(reps * self.target_ms / max(work, 1e-3))))
        trials = [self.span(fn, reps) / reps for _ in range(self.trials)]
        return {"ms": statistics.median(trials), "reps": reps, "trials": trials}


class Run:
    """One run: the folder, the device, the timer, and the times recorded so far."""

    def __init__(self, out: Path, size: str, device: str, only: list[str]):
        self.out, self.size, self.device, self.only = out, size, device, only
        self.w = SPEC[size]
        self.timer = Timer(device, **TIMING[size])
        self.timings: dict[str, dict] = {}
        self.optimizer_label = ""

    def selected(self, workload: str) -> bool:
        return not self.only or any(workload.startswith(prefix) for prefix in self.only)

    def save(self, file: str, tensors: dict[str, torch.Tensor]) -> None:
        cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
        save_file(cpu, str(self.out / f"{file}.safetensors"))

    def time(self, row: str, fn) -> None:
        self.timings[row] = self.timer.measure(fn)
        print(f"timed {row}: {self.timings[row]['ms']:.3f} ms ({self.timings[row]['reps']} reps)", flush=True)


def matmul(run: Run, s: dict) -> None:
    a = stream_values("matmul.a", (s["m"], s["k"]), run.device)
    b = stream_values("matmul.b", (s["n"], s["k"]) if s["transposeB"] else (s["k"], s["n"]), run.device)
    product = (lambda: a @ b.t()) if s["transposeB"] else (lambda: a @ b)
    run.save(f"matmul-{s['id']}", {"c": product()})
    run.time(f"matmul/{s['id']}", product)


def attention(run: Run, s: dict, case: dict) -> None:
    shape = (s["batch"], s["heads"], case["tokens"], s["dim"])
    q, k, v = (stream_values(f"attention.{n}", shape, run.device).requires_grad_() for n in "qkv")
    upstream = stream_values("attention.grad", shape, run.device)
    mask, causal = None, case["mask"] == "causal"
    if case["mask"] == "padded":
        lengths = torch.tensor(valid_lengths(s["batch"], case["tokens"]), device=run.device)
        keys = torch.arange(case["tokens"], device=run.device)
        mask = (keys[None, :] < lengths[:, None])[:, None, None, :]

    def forward_backward():
        q.grad = k.grad = v.grad = None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        out.backward(upstream)
        return out

    out = forward_backward()
    run.save(f"attention-{case['id']}", {"o": out, "dq": q.grad, "dk": k.grad, "dv": v.grad})
    run.time(f"attention/{case['id']}", forward_backward)


def layernorm(run: Run, s: dict) -> None:
    rows, cols = s["rows"], s["cols"]
    x = stream_values("layernorm.x", (rows, cols), run.device).requires_grad_()
    gamma = stream_values("layernorm.gamma", (cols,), run.device).requires_grad_()
    beta = stream_values("layernorm.beta", (cols,), run.device).requires_grad_()
    upstream = stream_values("layernorm.grad", (rows, cols), run.device)

    def forward_backward():
        x.grad = gamma.grad = beta.grad = None
        y = F.layer_norm(x, (cols,), gamma, beta, s["eps"])
        y.backward(upstream)
        return y

    y = forward_backward()
    run.save("layernorm", {"y": y, "dx": x.grad, "dgamma": gamma.grad, "dbeta": beta.grad})
    run.time("layernorm", forward_backward)


def chain(run: Run, s: dict) -> None:
    x = stream_values("chain.x", (s["rows"], s["cols"]), run.device)
    bias = stream_values("chain.bias", (s["cols"],), run.device)
    residual = stream_values("chain.residual", (s["rows"], s["cols"]), run.device)

    def forward():
        return F.gelu(x + bias) + residual

    run.save("chain", {"y": forward()})
    run.time("chain", forward)


def adamw(params, s: dict, device: str):
    """AdamW(fused=True) where this PyTorch build supports it for the device, else the default (foreach)."""
    options = {"lr": s["lr"], "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": s["weightDecay"]}
    try:
        return torch.optim.AdamW(params, fused=True, **options), "torch.optim.AdamW(fused=True)"
    except RuntimeError as error:
        print(f"AdamW(fused=True) is not available on {device} ({error}); timing the default", flush=True)
        return torch.optim.AdamW(params, **options), "torch.optim.AdamW (not fused)"


def optimizer(run: Run, s: dict) -> None:
    """Three parameter groups laid out as in optimizer_workload.ts; values and gradients from the streams."""
    width = s["width"]
    shapes = [(width, width), (width, width), (width,), (width,)] * s["layers"]
    groups, start = [], 0
    for _ in range(s["models"]):
        group = []
        for shape in shapes:
            p = stream_values("optimizer.p", shape, run.device, start).requires_grad_()
            group.append((p, start))
            start += p.numel()
        groups.append(group)
    count = start
    opt, run.optimizer_label = adamw([{"params": [p for p, _ in g]} for g in groups], s, run.device)
    for stream in ("optimizer.g1", "optimizer.g2"):
        for group in groups:
            for p, at in group:
                p.grad = stream_values(stream, p.shape, run.device, at)
        opt.step()
    flat = torch.cat([p.detach().reshape(-1) for g in groups for p, _ in g])
    index = torch.arange(0, count, s["sampleEvery"], device=run.device)
    if index[-1].item() != count - 1:
        index = torch.cat([index, torch.tensor([count - 1], device=run.device)])
    norm = flat.to(torch.float64).norm().to(torch.float32).reshape(1)
    run.save("optimizer", {"index": index.to(torch.int32), "p": flat[index], "norm": norm})
    del flat
    run.time("optimizer", opt.step)


def hf_model(family: str, size: dict, dropout: float):
    """The Hugging Face model of bench/gpu/model_workloads.ts's benchConfig, on the CPU."""
    common = {"vocab_size": size["vocab"], "num_labels": 2}
    if family == "gpt2":
        config = GPT2Config(
            n_embd=size["hidden"], n_layer=size["layers"], n_head=size["heads"], n_inner=size["intermediate"],
            n_positions=size["tokens"] + 2, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
            pad_token_id=0, bos_token_id=0, eos_token_id=0, **common,
        )
        return GPT2ForSequenceClassification(config)
    encoder = {
        "hidden_size": size["hidden"],
        "num_hidden_layers": size["layers"],
        "num_attention_heads": size["heads"],
        "intermediate_size": size["intermediate"],
        "max_position_embeddings": size["tokens"] + 2,
        "hidden_dropout_prob": dropout,
        "attention_probs_dropout_prob": dropout,
        **common,
    }
    if family == "bert":
        return BertForSequenceClassification(BertConfig(pad_token_id=0, **encoder))
    config = RobertaConfig(
        pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1, layer_norm_eps=1e-5, **encoder
    )
    return RobertaForSequenceClassification(config)


def checked_gradient(name: str, layers: int, all_of_them: bool) -> bool:
    """Every gradient of a small model; of a large one the embeddings, first and last layers and the head."""
    pattern = rf"embeddings|\.wte\.|\.wpe\.|\.(layer|h)\.(0|{layers - 1})\.|ln_f|pooler|classifier|score"
    return all_of_them or re.search(pattern, name) is not None


def models(run: Run, size: dict) -> None:
    spec = run.w["models"]
    ids = stream_ints("model.ids", size["batch"] * size["tokens"], 2, size["vocab"], run.device)
    ids = ids.reshape(size["batch"], size["tokens"])
    labels = stream_ints("model.labels", size["batch"], 0, 2, run.device)
    expected = {}
    for index, family in enumerate(FAMILIES):
        torch.manual_seed(SEED + index)
        model = hf_model(family, size, spec["dropout"])
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 1:
                    p.add_(ONE_D_NOISE * torch.randn_like(p))
        model.save_pretrained(str(run.out / f"model-{size['id']}-{family}"))
        model.to(run.device).eval()
        out = model(input_ids=ids, labels=labels)
        out.loss.backward()
        count = sum(p.numel() for p in model.parameters())
        squares = torch.zeros((), dtype=torch.float64, device=run.device)
        for name, p in model.named_parameters():
            squares += p.grad.to(torch.float64).square().sum()
            if checked_gradient(name, size["layers"], count <= spec["gradientsOfAllUpTo"]):
                expected[f"{family}/grad/{name}"] = p.grad
        expected[f"{family}/loss"] = out.loss.reshape(1)
        expected[f"{family}/logits"] = out.logits
        expected[f"{family}/grad_norm"] = squares.sqrt().to(torch.float32).reshape(1)
        model.zero_grad(set_to_none=True)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=spec["lr"], weight_decay=spec["weightDecay"])

        def step():
            opt.zero_grad(set_to_none=True)
            model(input_ids=ids, labels=labels).loss.backward()
            opt.step()

        run.time(f"model/{size['id']}/{family}", step)
        del model, opt
    run.save(f"model-{size['id']}", expected)


def device_info(device: str) -> tuple[str, str]:
    if device != "cuda":
        return f"CPU ({platform.processor() or platform.machine()})", "-"
    card, driver = torch.cuda.get_device_name(0), "unknown"
    try:
        query = ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]
        line = subprocess.run(query, capture_output=True, text=True, check=True).stdout.splitlines()[0]
        card, driver = (part.strip() for part in line.split(",", 1))
    except (OSError, subprocess.CalledProcessError, IndexError, ValueError):
        pass
    return card, driver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for the references and torch.json")
    parser.add_argument("--size", choices=("full", "tiny"), default="full")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--only", default="", help="comma-separated prefixes of workload ids (model/small)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("torch_side.py: CUDA is not available (use --device cpu for a correctness-only run)")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    transformers.utils.logging.disable_progress_bar()
    args.out.mkdir(parents=True, exist_ok=True)
    run = Run(args.out, args.size, args.device, [p for p in args.only.split(",") if p])
    w = run.w
    steps = [(f"matmul/{m['id']}", lambda m=m: matmul(run, m)) for m in w["matmul"]]
    cases = w["attention"]["cases"]
    steps += [(f"attention/{c['id']}", lambda c=c: attention(run, w["attention"], c)) for c in cases]
    steps += [("layernorm", lambda: layernorm(run, w["layernorm"]))]
    steps += [("chain", lambda: chain(run, w["chain"]))]
    steps += [("optimizer", lambda: optimizer(run, w["optimizer"]))]
    steps += [(f"model/{s['id']}", lambda s=s: models(run, s)) for s in w["models"]["sizes"]]
    chosen = [(name, fn) for name, fn in steps if run.selected(name)]
    if not chosen:
        sys.exit(f"torch_side.py: --only {args.only} selects no workload")
    # A workload that fails here is recorded and skipped, so that one failure does not cost a rare GPU
    # run the others; our side reports it as a failed check and the run's status is 1.
    failed = {}
    for name, fn in chosen:
        print(f"running {name}", flush=True)
        try:
            fn()
        except Exception as error:  # noqa: BLE001 - any failure of one workload is reported, not fatal
            traceback.print_exc()
            failed[name] = f"{type(error).__name__}: {error}".splitlines()[0]
            print(f"torch_side.py: {name} failed: {failed[name]}", file=sys.stderr, flush=True)
        if args.device == "cuda":
            torch.cuda.empty_cache()
    if len(failed) == len(chosen):
        sys.exit("torch_side.py: every workload failed")
    card, driver = device_info(args.device)
    record = {
        "size": args.size,
        "device": args.device,
        "card": card,
        "driver": driver,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "optimizer": run.optimizer_label or "torch.optim.AdamW",
        "tf32": False,
        "date": datetime.date.today().isoformat(),
        "timings": run.timings,
        "failed": failed,
    }
    (args.out / "torch.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {len(run.timings)} timings and the reference files to {args.out}", flush=True)
    if failed:
        sys.exit(f"torch_side.py: failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
