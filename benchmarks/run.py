"""sedviz performance benchmark: one command, one process, one table of ratios measured in the same run.

    .venv/bin/python -m benchmarks.run            # GPT-2 small shapes (124M parameters), 12-25 min on 2 cores
    .venv/bin/python -m benchmarks.run --quick    # d=128, 2 blocks: a smoke test (~30 s), no targets asserted

See benchmarks/README.md for what each row measures, the options, and how to read the table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / "_work"
MB = 1e6


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _med(xs):
    return statistics.median(xs) if xs else float("nan")


class T:
    """Seconds of one timed call: ``cpu`` (user + system time of this process, all its threads) and
    ``wall``, and the call's result. On a shared machine wall time swings 2-3x with other users'
    load while CPU time stays within a few percent, so the ratios use CPU time (with one thread
    and warm page cache, the two agree on an idle machine)."""

    def __init__(self, wall: float, cpu: float, out=None):
        self.wall, self.cpu, self.out = wall, cpu, out


def _timed(fn) -> T:
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return T(time.perf_counter() - w, time.process_time() - c, out)


def _paired(fa, fb, reps: int):
    """Run fa and fb ``reps`` times each, alternating which goes first; two lists of T."""
    a, b = [], []
    for r in range(reps):
        if r % 2 == 0:
            a.append(_timed(fa))
            b.append(_timed(fb))
        else:
            b.append(_timed(fb))
            a.append(_timed(fa))
    return a, b


def _child_env(threads: int) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _row(rows, rid, name, value, *, ratio=None, target=None, met=None, note=""):
    rows.append({"id": rid, "row": name, "value": value, "ratio": ratio, "target": target, "met": met, "note": note})
    _log(f"row {rid}: {name}: {value}" + (f" ratio {ratio:.3g}" if isinstance(ratio, (int, float)) else "") + (f" [{note}]" if note else ""))


# ---------------------------------------------------------------------------------------------


def parse(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small width (d=128, 2 blocks), few checkpoints: a smoke test")
    ap.add_argument("--layout", choices=("conv1d", "linear"), default="conv1d",
                    help="block matrices stored as GPT-2 Conv1D (in, out) [default] or nn.Linear (out, in)")
    ap.add_argument("--n-time", type=int, help="checkpoints in each timed pass (default 2; quick 3)")
    ap.add_argument("--repeats", type=int, help="repetitions of each timed comparison, order alternating (default 2; quick 1)")
    ap.add_argument("--n-naive", type=int, default=1, help="checkpoints the naive loop decomposes (default 1)")
    ap.add_argument("--n-mem", type=int, help="checkpoints of the memory run (default 20; quick 4)")
    ap.add_argument("--n-dask", type=int, help="checkpoints of the Dask scaling pass (default 4; quick 3)")
    ap.add_argument("--n-inc", type=int, help="checkpoints of the stored run the increments add to (default 4; quick 2)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch/BLAS threads per process (default 1: on a shared 2-core machine more threads than free "
                         "cores make LAPACK calls up to 100x slower; every pass and floor uses the same setting)")
    ap.add_argument("--skip", default="", help="comma-separated rows to skip: values,vectors,naive,ww,memory,increment,sketch,dask,gpu")
    ap.add_argument("--ww-install", choices=("auto", "yes", "no"), default="auto",
                    help="pip install weightwatcher into benchmarks/_work/wwlib when it cannot be imported "
                         "(auto: yes for the full run, no for --quick)")
    ap.add_argument("--work", type=Path, help="folder for checkpoints and stores (default benchmarks/_work/<mode>)")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoints for the next run (default: delete them at the end)")
    ap.add_argument("--json", type=Path, help="also write the table and raw numbers as JSON here")
    args = ap.parse_args(argv)
    q = args.quick
    args.n_time = args.n_time or (3 if q else 2)
    args.repeats = args.repeats or (1 if q else 2)
    args.n_mem = args.n_mem or (4 if q else 20)
    args.n_dask = args.n_dask or (3 if q else 4)
    args.n_inc = args.n_inc or (2 if q else 4)
    args.n_naive = max(1, min(args.n_naive, args.n_time))
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    args.work = args.work or (WORK / ("quick" if q else f"full-{args.layout}"))
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    import torch

    torch.set_num_threads(args.threads)
    os.environ.update({k: v for k, v in _child_env(args.threads).items() if k.endswith("_THREADS")})
    import sedviz
    from benchmarks import reference as ref
    from benchmarks import synth

    cfg = synth.quick_config(args.layout) if args.quick else synth.Config(layout=args.layout)
    t_start = time.perf_counter()
    info = {
        "mode": "quick" if args.quick else "full",
        "config": str(cfg),
        "params": cfg.n_params(),
        "threads": args.threads,
        "torch": torch.__version__,
        "sedviz": sedviz.__version__,
        "python": platform.python_version(),
        "cpu": _cpu(),
        "cores": os.cpu_count(),
        "load_start": os.getloadavg(),
        "cuda": torch.cuda.is_available(),
    }
    _log(f"sedviz benchmark ({info['mode']}): {cfg}, {cfg.n_params() / 1e6:.1f}M parameters, {args.threads} thread(s), "
         f"load average {info['load_start'][0]:.1f} on {info['cores']} cores")
    work: Path = args.work
    n_build = max(args.n_time, args.n_mem, args.n_inc + 1, args.n_dask)
    _log(f"building {n_build} checkpoints (.pt; the first {args.n_time} also .safetensors) in {work}")
    t_build = _timed(lambda: synth.build(cfg, work / "ckpt", n_build, n_safetensors=args.n_time, log=_log))
    files = t_build.out
    ckpt_bytes = files["bytes"]
    info["checkpoint_bytes"] = ckpt_bytes
    info["build_s"] = t_build.wall
    pts, sts = files["pt"], files["safetensors"]
    runs = work / "runs"
    rows: list[dict] = []
    raw: dict = {}

    _warm_up(work, args, ref, synth)

    time_pt = synth.link_run(pts[: args.n_time], runs / "time_pt")
    time_st = synth.link_run(sts[: args.n_time], runs / "time_st")
    n = args.n_time
    values_opts = dict(align=False, sva=False, sketch=False, max_lag=None)
    vectors_opts = dict(align=True, sva=True, sketch=False, max_lag=None)

    def sedviz_pass(run, opts, **kw):
        return lambda: sedviz.compute(run, progress=False, device="cpu", **opts, **kw)

    # 1. floor ---------------------------------------------------------------------------------
    sedviz_values = None  # T per checkpoint of the values-only pass (.pt)
    if "values" not in args.skip:
        for fmt, run, paths in (("pt", time_pt, pts[:n]), ("safetensors", time_st, sts[:n])):
            _log(f"1. values-only pass vs floor ({fmt}), {n} checkpoints x {args.repeats}")
            fl, sv = _paired(lambda: ref.floor_pass(paths, vectors=False), sedviz_pass(run, values_opts), args.repeats)
            ratios = [b.cpu / a.cpu for a, b in zip(fl, sv)]
            wall = [b.wall / a.wall for a, b in zip(fl, sv)]
            f_ck, s_ck = _per(fl, n), _per(sv, n)
            if fmt == "pt":
                sedviz_values = s_ck
            raw[f"values_{fmt}"] = {"floor": _raw(fl), "sedviz": _raw(sv), "ratios_cpu": ratios, "ratios_wall": wall}
            _row(rows, "1a" if fmt == "pt" else "1b", f"values-only pass / floor ({fmt})",
                 f"sedviz {s_ck.cpu:.2f} s/ckpt, floor {f_ck.cpu:.2f} s/ckpt", ratio=_med(ratios), target="<= 1.25",
                 met=_med(ratios) <= 1.25, note=f"floor: read + svdvals of each matrix, tall side up; wall-clock ratio "
                 f"{_med(wall):.2f} (sedviz {s_ck.wall:.2f} s/ckpt, floor {f_ck.wall:.2f})")
    sedviz_vectors, vectors_ds = None, None
    if "vectors" not in args.skip:
        _log(f"1. pass with vectors (align + sva) vs floor, {n} checkpoints x {args.repeats}")
        fl, sv = _paired(lambda: ref.floor_pass(pts[:n], vectors=True), sedviz_pass(time_pt, vectors_opts), args.repeats)
        vectors_ds = sv[0].out
        ratios = [b.cpu / a.cpu for a, b in zip(fl, sv)]
        wall = [b.wall / a.wall for a, b in zip(fl, sv)]
        # the floor's block SVDs are timed in wall time; scale to CPU time by the pass's own cpu/wall
        mat_only = [b.cpu / (a.cpu * (1 - a.out["blocks_total"] / a.wall)) for a, b in zip(fl, sv)]
        f_ck, s_ck = _per(fl, n), _per(sv, n)
        sedviz_vectors = s_ck
        calls = fl[0].out["calls"] // n
        raw["vectors"] = {"floor": _raw(fl), "floor_blocks_wall_s": [a.out["blocks_total"] for a in fl], "sedviz": _raw(sv),
                          "ratios_cpu": ratios, "ratios_wall": wall, "ratios_matrices_only": mat_only, "floor_calls_per_ckpt": calls}
        _row(rows, "1c", "pass with top-k vectors (align, sva) / floor", f"sedviz {s_ck.cpu:.2f} s/ckpt, floor {f_ck.cpu:.2f} s/ckpt",
             ratio=_med(ratios), target="<= 1.25", met=_med(ratios) <= 1.25,
             note=f"floor: read + thin svd of each matrix and align block ({calls} calls/ckpt), tall side up; "
                  f"vs the matrices' SVDs alone: {_med(mat_only):.2f}; wall-clock ratio {_med(wall):.2f}")

    # 2. naive ---------------------------------------------------------------------------------
    if "naive" not in args.skip:
        nn_ = args.n_naive
        if sedviz_vectors is None:
            t = _timed(sedviz_pass(time_pt, vectors_opts))
            vectors_ds, sedviz_vectors = t.out, _per([t], n)
        _log(f"2. naive per-measure loop on {nn_} checkpoint(s)")
        t = _timed(lambda: ref.naive_pass(pts[:nn_], pts[n - 1], k=100))
        res = t.out
        naive_ck = T(t.wall / nn_, t.cpu / nn_)
        diffs = ref.compare(vectors_ds, res["values"], "time_pt", lambda stem: int(stem.split("_")[-1]))
        ratio = naive_ck.cpu / sedviz_vectors.cpu
        tol = {"sv": 1e-4, "eff_rank": 1e-4, "stable_rank": 1e-4, "spectral_norm": 1e-4, "fro_norm": 1e-4,
               "sva_top8": 1e-3, "align_top8": 1e-3, "sva": 2e-2, "align": 2e-2}
        same = all(diffs.get(key, float("inf")) <= v for key, v in tol.items())
        raw["naive"] = {"cpu_s_per_ckpt": naive_ck.cpu, "wall_s_per_ckpt": naive_ck.wall, "svds_per_ckpt": res["svds"] / nn_,
                        "max_diff": diffs, "tolerance": tol, "same_numbers": same}
        _row(rows, "2", "naive loop (an SVD per measure) / sedviz", f"naive {naive_ck.cpu:.1f} s/ckpt "
             f"({res['svds'] // nn_} SVDs), sedviz {sedviz_vectors.cpu:.2f} s/ckpt", ratio=ratio, target=">= 3",
             met=ratio >= 3 and same, note="same numbers: " + ("yes" if same else "NO") + " (max difference " +
             ", ".join(f"{k} {v:.0e}" for k, v in diffs.items()) + "; align/sva past the top 8 ranks differ as much between "
             "two float32 LAPACK routes for the same matrix: near-degenerate bulk singular values, relative gaps ~1e-4)"
             f"; wall-clock ratio {naive_ck.wall / sedviz_vectors.wall:.2f}")

    # 3. WeightWatcher -------------------------------------------------------------------------
    if "ww" not in args.skip:
        _log("3. WeightWatcher analyze() on the same weights")
        ww = _weightwatcher(pts[0], args)
        raw["weightwatcher"] = ww
        if "cpu" in ww and "why" not in ww:
            if sedviz_values is None:
                t = _timed(sedviz_pass(time_pt, values_opts))
                sedviz_values = _per([t], n)
            ratio = ww["cpu"] / sedviz_values.cpu
            _row(rows, "3", "WeightWatcher analyze() / sedviz values-only", f"WW {ww['cpu']:.2f} s/ckpt "
                 f"({ww['layers']} layers, v{ww['version']}), sedviz {sedviz_values.cpu:.2f} s/ckpt", ratio=ratio,
                 target=">= 5", met=ratio >= 5, note=f"pip install --target benchmarks/_work/wwlib; this env's torch "
                 f"{ww['torch']} unchanged: {ww['torch_unchanged']}; WW runs float64 scipy SVDs + power-law fits; "
                 f"wall-clock ratio {ww['wall'] / sedviz_values.wall:.2f}")
        else:
            _row(rows, "3", "WeightWatcher analyze() / sedviz values-only", "not measured", note=ww.get("why", "?"))

    # 4. memory / 5. increments ----------------------------------------------------------------
    mem_opts = dict(align=True, sva=False, sketch=True, max_lag=None)
    mem_store = work / "stores" / "mem.zarr"
    if "memory" not in args.skip:
        _log(f"4. peak memory of a {args.n_mem}-checkpoint run (fresh process)")
        mem_run = synth.link_run(pts[: args.n_mem], runs / "mem")
        shutil.rmtree(mem_store, ignore_errors=True)
        mem_store.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([sys.executable, "-m", "benchmarks.memrun", str(mem_run), str(mem_store), json.dumps(mem_opts),
                               str(args.threads)], capture_output=True, text=True, env=_child_env(args.threads), cwd=ROOT)
        if proc.returncode != 0:
            raise RuntimeError(f"memory run failed:\n{proc.stderr[-3000:]}")
        mem = json.loads(proc.stdout.strip().splitlines()[-1])
        raw["memory"] = mem
        limit = 1.5 * ckpt_bytes + 300 * MB
        peak = mem["peak_hwm"]
        _row(rows, "4", f"peak RSS, {args.n_mem}-checkpoint run", f"{peak / MB:.0f} MB (after imports "
             f"{mem['baseline'] / MB:.0f} MB; one checkpoint {ckpt_bytes / MB:.0f} MB)",
             ratio=peak / limit, target=f"<= 1.5 x ckpt + 300 MB = {limit / MB:.0f} MB", met=peak <= limit,
             note=f"above the imports: {(peak - mem['baseline']) / MB:.0f} MB; fresh process, Zarr store, options {mem_opts}; "
                  f"{mem['cpu'] / args.n_mem:.1f} s/ckpt CPU")
    if "increment" not in args.skip:
        _increment_rows(rows, raw, args, pts, runs, work / "stores", sedviz)

    # 6. sketch vs read ------------------------------------------------------------------------
    if "sketch" not in args.skip:
        _log("6. sketch cost vs read cost per checkpoint")
        sk = _sketch_vs_read(pts[:n], ref)
        raw["sketch"] = sk
        ratio = sk["sketch_cpu"] / sk["read_cold_wall"]
        _row(rows, "6", "sketch (d=200) / read, per checkpoint", f"sketch {sk['sketch_cpu']:.3f} s (first, building maps: "
             f"{sk['sketch_first_cpu']:.3f} s); read cold {sk['read_cold_wall']:.3f} s, warm {sk['read_warm_wall']:.3f} s",
             ratio=ratio, target="<= 1 (vs cold read)", met=ratio <= 1,
             note=f"sketch: CPU time of Engine.trajectory; read: wall time of read_state + touching every byte, after "
                  f"evicting the file from the page cache (cold) or not (warm); vs warm read: "
                  f"{sk['sketch_cpu'] / sk['read_warm_wall']:.2f}")

    # 7. Dask ----------------------------------------------------------------------------------
    if "dask" not in args.skip:
        _log(f"7. Dask LocalCluster, 1 vs 2 workers, {args.n_dask} checkpoints")
        dk = _dask(synth.link_run(pts[: args.n_dask], runs / "dask"), values_opts)
        raw["dask"] = dk
        if "why" in dk:
            _row(rows, "7", "Dask 2 workers vs 1", "not measured", note=dk["why"])
        else:
            sp = dk["1"] / dk["2"]
            _row(rows, "7", "Dask LocalCluster: 2 workers vs 1 (speed-up)", f"1 worker {dk['1']:.1f} s, 2 workers {dk['2']:.1f} s",
                 ratio=sp, target="info (ideal 2 on 2 idle cores)", note=f"values-only pass, {args.n_dask} checkpoints, "
                 f"1 thread per worker; load average {os.getloadavg()[0]:.1f}")

    # 8. GPU -----------------------------------------------------------------------------------
    if "gpu" not in args.skip:
        if torch.cuda.is_available():
            _log("8. GPU vs CPU throughput")
            g = {}
            for rid, label, opts, cpu in (("8a", "values", values_opts, sedviz_values), ("8b", "vectors", vectors_opts, sedviz_vectors)):
                sedviz.compute(time_pt, progress=False, device="cuda", **opts)  # warm-up (CUDA context, kernels)
                t = _timed(lambda: sedviz.compute(time_pt, progress=False, device="cuda", **opts))
                g[label] = {"gpu_wall_s_per_ckpt": t.wall / n, "cpu_wall_s_per_ckpt": cpu.wall if cpu else None}
                if cpu:
                    _row(rows, rid, f"GPU vs CPU throughput ({label})", f"GPU {n / t.wall:.2f} ckpt/s, "
                         f"CPU {1 / cpu.wall:.2f} ckpt/s ({args.threads} thread(s))", ratio=cpu.wall / (t.wall / n),
                         target="info", note=torch.cuda.get_device_name(0) + "; wall-clock")
            raw["gpu"] = g
        else:
            _row(rows, "8", "GPU vs CPU throughput", "no GPU here (torch.cuda.is_available() is False)", note="code path only")

    info["load_end"] = os.getloadavg()
    info["total_s"] = time.perf_counter() - t_start
    result = {"info": info, "rows": rows, "raw": raw}
    print(format_table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return result


# ---------------------------------------------------------------------------------------------


def _increment_rows(rows, raw, args, pts, runs, stores, sedviz) -> None:
    """Rows 5, 5b, 5c: one checkpoint added to a stored run of ``n_inc``, over computing it alone,
    with the default options (sva on, max_lag "auto") unless the row says otherwise.

    5: the checkpoint the store lacks is the run's final one, already its sva reference (as after
    a compute stopped before its last commit): only it is computed. 5b: sva off, a checkpoint after
    the final: only it is computed (``max_lag="auto"`` no longer depends on the run's length).
    5c: the default options and a checkpoint after the final: agreement with the final checkpoint
    changes for every stored checkpoint, so the run is recomputed (information, measured once)."""
    from benchmarks import synth

    k = args.n_inc
    stores.mkdir(parents=True, exist_ok=True)
    base = synth.link_run(pts[:k], runs / "inc_base")
    grown = synth.link_run(pts[: k + 1], runs / "inc_grown")
    alone = synth.link_run([pts[k]], runs / "inc_alone")
    counter = {"n": 0}

    def compute(run, opts, store):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # 5c's "recomputing" warning
            return sedviz.compute(run, store, names=["inc"], progress=False, device="cpu", **opts)

    def fresh(name):
        counter["n"] += 1
        path = stores / f"{name}{counter['n']}.zarr"
        shutil.rmtree(path, ignore_errors=True)
        return path

    def copies(src, name):  # one copy per repetition, made before any timing
        out = []
        for _ in range(args.repeats):
            dst = fresh(name)
            shutil.copytree(src, dst)
            out.append(dst)
        return out

    def paired(opts, targets):
        it = iter(targets)

        def add():
            ds = compute(grown, opts, next(it))
            assert ds.sizes["step"] == k + 1
        return _paired(add, lambda: compute(alone, opts, fresh("alone")), args.repeats)

    _log(f"5. one checkpoint added to a stored {k}-checkpoint run vs computed alone (default options)")
    stopped = fresh("stopped")
    compute(grown, {}, stopped)  # all k + 1, then the final's commit undone
    _uncommit_final(stopped)
    a, o = paired({}, copies(stopped, "resume"))
    ratios = [x.cpu / y.cpu for x, y in zip(a, o)]
    raw["increment"] = {"add": _raw(a), "alone": _raw(o), "ratios_cpu": ratios}
    _row(rows, "5", f"add the missing final checkpoint to a stored {k}-checkpoint run / compute it alone (defaults)",
         f"add {_med([x.cpu for x in a]):.2f} s, alone {_med([x.cpu for x in o]):.2f} s", ratio=_med(ratios), target="<= 1.3",
         met=_med(ratios) <= 1.3, note="default options (align, sva, sketch, max_lag='auto'); the store holds the run up to "
         "its final checkpoint's row, uncommitted, as a compute stopped before its last commit leaves it, so the final is "
         f"already the sva reference; Zarr; wall-clock ratio {_med([x.wall / y.wall for x, y in zip(a, o)]):.2f}")

    _log("5b. the same after the final checkpoint, sva off")
    nosva = {"sva": False}
    base_b = fresh("base_nosva")
    compute(base, nosva, base_b)
    a, o = paired(nosva, copies(base_b, "add_nosva"))
    ratios = [x.cpu / y.cpu for x, y in zip(a, o)]
    raw["increment_nosva"] = {"add": _raw(a), "alone": _raw(o), "ratios_cpu": ratios}
    _row(rows, "5b", f"add 1 checkpoint after the final of a stored {k}-checkpoint run / compute it alone (sva off)",
         f"add {_med([x.cpu for x in a]):.2f} s, alone {_med([x.cpu for x in o]):.2f} s", ratio=_med(ratios), target="<= 1.3",
         met=_med(ratios) <= 1.3, note="defaults except sva=False; max_lag='auto' resolves from the model's size alone, so "
         "only the new checkpoint is computed (its update products replay up to max_lag earlier checkpoints, read only)")

    _log("5c. after the final checkpoint with the default options (recomputes the run)")
    base_c = fresh("base_defaults")
    compute(base, {}, base_c)
    add = _timed(lambda: compute(grown, {}, base_c))
    one = _med(raw["increment"]["alone"]["cpu_s"])
    raw["increment_defaults"] = {"add": _raw([add]), "alone_cpu_s": one}
    _row(rows, "5c", f"add 1 checkpoint after the final of a stored {k}-checkpoint run / compute it alone (defaults)",
         f"add {add.cpu:.2f} s, alone {one:.2f} s", ratio=add.cpu / one, target=f"info (recomputes {k + 1} by design)",
         note="agreement 'sva' is relative to the final checkpoint, so a new final recomputes every stored checkpoint "
              "(beside the stored ones, swapped in at the end); pass sva=False while training runs to add only new ones")


def _uncommit_final(store: Path) -> None:
    """Undo the last commit of the store's one run: its final checkpoint's row stays written but
    uncommitted, as a compute killed before that commit leaves it (tests/test_store_faults.py checks
    that such stores resume to identical numbers). Uses the store's commit-file layout (docs/schema.md)."""
    (path,) = (store / "sedviz_commits").glob("*.json")
    info = json.loads(path.read_text())
    last = max(info["checkpoints"], key=int)
    del info["checkpoints"][last]
    info["n"] -= 1
    path.write_text(json.dumps(info))


def _per(ts: list, n: int) -> T:
    """Median seconds per checkpoint of passes over n checkpoints."""
    return T(_med([t.wall for t in ts]) / n, _med([t.cpu for t in ts]) / n)


def _raw(ts: list) -> dict:
    return {"wall_s": [t.wall for t in ts], "cpu_s": [t.cpu for t in ts]}


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _warm_up(work: Path, args, ref, synth) -> None:
    """First calls pay one-off costs (MKL init, imports of zarr/xarray paths): pay them before timing."""
    import sedviz

    cfg = synth.Config(d=64, n_layer=1, vocab=100, n_ctx=16, layout=args.layout)
    files = synth.build(cfg, work / "warm", 2, n_safetensors=0, log=lambda m: None)
    run = synth.link_run(files["pt"], work / "runs" / "warm")
    ref.floor_pass(files["pt"], vectors=True)
    ref.naive_pass(files["pt"][:1], files["pt"][-1], k=10)
    sedviz.compute(run, progress=False, device="cpu", sketch=True)
    s = work / "stores" / "warm.zarr"
    shutil.rmtree(s, ignore_errors=True)
    sedviz.compute(run, s, progress=False, device="cpu")


def _weightwatcher(ckpt: Path, args) -> dict:
    wwlib = WORK / "wwlib"
    env = _child_env(args.threads)
    probe = subprocess.run([sys.executable, "-c", f"import sys; sys.path.append({str(wwlib)!r}); import weightwatcher"],
                           capture_output=True, text=True, env=env)
    if probe.returncode != 0:
        install = args.ww_install == "yes" or (args.ww_install == "auto" and not args.quick)
        if not install:
            return {"why": "weightwatcher is not installed (run without --quick, or with --ww-install yes, to pip install "
                           "it into benchmarks/_work/wwlib)"}
        _log("   pip install --target benchmarks/_work/wwlib weightwatcher (beside, never into, this environment)")
        pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(wwlib), "weightwatcher"],
                             capture_output=True, text=True, env=env)
        if pip.returncode != 0:
            return {"why": "pip install weightwatcher failed: " + (pip.stderr.strip().splitlines() or ["?"])[-1][:200]}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.wwrun", str(ckpt), str(wwlib)], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    if proc.returncode != 0:
        return {"why": "weightwatcher failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:200]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if not out.get("torch_unchanged", False):
        out["why"] = "importing weightwatcher changed torch"
    return out


def _sketch_vs_read(paths, ref) -> dict:
    import torch

    from sedviz.io import read_state
    from sedviz.pipeline import Engine, Options, _entries, plan_run

    cold, warm, sk = [], [], []
    eng = None
    for p in paths:
        ref.evict(p)
        cold.append(_timed(lambda: ref.touch(read_state(p))).wall)
        t = _timed(lambda: read_state(p))
        state = t.out
        warm.append(t.wall + _timed(lambda: ref.touch(state)).wall)
        if eng is None:
            opts = Options(align=False, sva=False, sketch=True, sketch_dim=200, max_lag=None)
            plan = plan_run("b", state, opts, max_steps=len(paths), reference_step=None)
            eng = Engine(plan, opts, torch.device("cpu"), on_error="raise")
        entries = _entries(state)
        sk.append(_timed(lambda: eng.trajectory(entries)))
        del state, entries
    steady = sk[1:] or sk
    return {"read_cold_wall": _med(cold), "read_warm_wall": _med(warm), "sketch_cpu": _med([t.cpu for t in steady]),
            "sketch_wall": _med([t.wall for t in steady]), "sketch_first_cpu": sk[0].cpu,
            "all": {"cold_wall": cold, "warm_wall": warm, "sketch": _raw(sk)}}


def _dask(run: Path, opts: dict) -> dict:
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        return {"why": f"dask.distributed is not installed ({exc})"}
    import sedviz

    out = {}
    for n in (1, 2):
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            client.run(lambda: __import__("sedviz.pipeline"))  # imports are start-up, not work
            out[str(n)] = _timed(lambda: sedviz.compute(run, progress=False, device="cpu", client=client, **opts)).wall
    return out


def format_table(result: dict) -> str:
    info, rows = result["info"], result["rows"]
    lines = [
        f"sedviz benchmark ({info['mode']}): {info['config']}",
        f"{info['params'] / 1e6:.1f}M parameters, one checkpoint {info['checkpoint_bytes'] / MB:.0f} MB; {info['cpu']}, "
        f"{info['cores']} cores, {info['threads']} thread(s); torch {info['torch']}, sedviz {info['sedviz']}; "
        f"load average {info['load_start'][0]:.1f} -> {info['load_end'][0]:.1f}; took {info['total_s'] / 60:.1f} min",
        "",
    ]
    head = ("#", "measure", "measured", "ratio", "target", "met")
    table = [head]
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if isinstance(r["ratio"], (int, float)) else "-"
        met = {True: "yes", False: "NO", None: "-"}[r["met"]]
        table.append((r["id"], r["row"], r["value"], ratio, r["target"] or "-", met))
    widths = [max(len(str(t[i])) for t in table) for i in range(len(head))]
    for j, t in enumerate(table):
        lines.append(" | ".join(str(c).ljust(w) for c, w in zip(t, widths)).rstrip())
        if j == 0:
            lines.append("-+-".join("-" * w for w in widths))
    notes = [f"  {r['id']}: {r['note']}" for r in rows if r["note"]]
    if notes:
        lines += ["", "notes:"] + notes
    return "\n".join(lines)


if __name__ == "__main__":
    main()
