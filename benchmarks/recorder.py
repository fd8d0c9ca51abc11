"""Overhead of recording spectra live (sedviz.Recorder), against training without it, same run.

    .venv/bin/python -m benchmarks.recorder             # rows 12 and 13 (~15 min on 2 busy cores)
    .venv/bin/python -m benchmarks.recorder --quick     # smoke test, no target asserted

Row 12: the demo's training loop (sedviz.demo, full batch AdamW) for ``--steps`` steps (default
3500, the demo's length: the recorder's fixed costs, a store's creation and the closing ``sva``
rewrite, count as in the real demo) at the demo's cadence (a record every 25 steps, default Recorder options), CPU time with the recorder over
without it (the same loop, the checkpoint hook a no-op), ``--repeats`` alternations, medians.
Goal <= 1.05.

Row 13: a GPT-2-small-shaped model (transformers GPT2LMHeadModel, 12 layers, d=768, vocab 50257,
random weights) trained with AdamW on random tokens (batch ``--batch`` x ``--seq``), a record every
100 steps. Training 100 steps of a 124M model on a CPU takes many minutes, so the row times
``--gpt-steps`` training steps and ``--gpt-records`` records separately (CPU time) and states
(100 x step + record) / (100 x step). Information: the record's cost is that of the checkpoint pass
on one checkpoint, the step's depends on batch and hardware.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import torch  # noqa: E402


def _demo_loop(steps: int, record: bool, work: Path, every: int) -> tuple[float, float]:
    from sedviz import demo
    from sedviz.recorder import Recorder

    cfg = demo._cfg({"steps": steps, "every": every, "weight_decay": 1.0})
    store = work / f"demo-{time.monotonic_ns()}.zarr"
    rec = Recorder(store, run="grok_wd1", every=every, n_heads=int(cfg["n_heads"])) if record else None

    def save(model, step, row):
        if rec is not None:
            rec.record(model, step, metrics=dict(zip(demo._METRICS[1:], row[1:])), force=True)

    t0, w0 = time.process_time(), time.perf_counter()
    demo._run_training(cfg, demo._build, "bench", False, save)
    if rec is not None:
        rec.close()
    took, wall = time.process_time() - t0, time.perf_counter() - w0
    shutil.rmtree(store, ignore_errors=True)
    return took, wall


def row12(args, work: Path) -> dict:
    plain, live = [], []
    for r in range(args.repeats):
        order = (False, True) if r % 2 == 0 else (True, False)
        for rec in order:
            (live if rec else plain).append(_demo_loop(args.steps, rec, work, 25))
    p, w = statistics.median(c for c, _ in plain), statistics.median(c for c, _ in live)
    pw, ww = statistics.median(x for _, x in plain), statistics.median(x for _, x in live)
    return {"id": "12", "measures": f"demo training {args.steps} steps, record every 25, with / without recorder (CPU s)",
            "ratio": w / p, "target": "<= 1.05",
            "raw": {"without_cpu_wall": plain, "with_cpu_wall": live, "wall_ratio": ww / pw}}


def row13(args, work: Path) -> dict:
    from transformers import GPT2Config, GPT2LMHeadModel

    from sedviz.recorder import Recorder

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=args.layers, n_embd=args.d_model, n_head=12, vocab_size=args.vocab, n_positions=1024)
    model = GPT2LMHeadModel(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)

    def step():
        x = torch.randint(0, args.vocab, (args.batch, args.seq), generator=g)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up (allocations, optimizer state)
    t0 = time.process_time()
    for _ in range(args.gpt_steps):
        step()
    t_step = (time.process_time() - t0) / args.gpt_steps
    store = work / "gpt.zarr"
    rec = Recorder(store, run="gpt", every=100)
    times = []
    for i in range(args.gpt_records):
        step()
        t0 = time.process_time()
        rec.record(model, 100 * (i + 1))
        times.append(time.process_time() - t0)
    t0 = time.process_time()
    rec.close()  # finishes sva (rewrites the run once)
    t_close = time.process_time() - t0
    shutil.rmtree(store, ignore_errors=True)
    t_rec = statistics.median(times)
    ratio = (100 * t_step + t_rec) / (100 * t_step)
    return {"id": "13", "measures": f"GPT-2-small shape ({n_params / 1e6:.0f}M params, batch {args.batch}x{args.seq}), "
            f"record every 100 steps: (100 step + record) / 100 step (CPU s)", "ratio": ratio, "target": "info",
            "raw": {"step_s": t_step, "record_s": times, "close_s": t_close, "params": n_params,
                    "max_lag": rec.plan.max_lag if rec.plan else None}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.recorder", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, a smoke test")
    p.add_argument("--steps", type=int, default=None, help="demo training steps (default 3500; quick 100)")
    p.add_argument("--repeats", type=int, default=None, help="alternations of row 12 (default 2; quick 1)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--gpt-steps", type=int, default=None, help="timed training steps of row 13 (default 5)")
    p.add_argument("--gpt-records", type=int, default=None, help="timed records of row 13 (default 2)")
    p.add_argument("--skip", default="", help="rows to leave out: 12,13")
    p.add_argument("--json", help="also write the rows and raw timings here")
    args = p.parse_args(argv)
    q = args.quick
    args.steps = args.steps or (100 if q else 3500)
    args.repeats = args.repeats or (1 if q else 2)
    args.gpt_steps = args.gpt_steps or (2 if q else 5)
    args.gpt_records = args.gpt_records or (1 if q else 2)
    args.layers, args.d_model, args.vocab = (2, 192, 2000) if q else (12, 768, 50257)
    torch.set_num_threads(1)
    skip = set(filter(None, args.skip.split(",")))
    rows = []
    with tempfile.TemporaryDirectory(prefix="sedviz-bench-rec-") as tmp:
        work = Path(tmp)
        if "12" not in skip:
            rows.append(row12(args, work))
        if "13" not in skip:
            rows.append(row13(args, work))
    print(f"{'row':<4} {'ratio':>7}  {'target':<8} measures")
    for r in rows:
        print(f"{r['id']:<4} {r['ratio']:7.3f}  {r['target']:<8} {r['measures']}")
    print("notes:")
    for r in rows:
        print(f"  {r['id']}: {json.dumps(r['raw'])}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "quick": q}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
