"""Write the tutorial notebooks of notebooks/ from the Python source below (nbformat).

    .venv/bin/python notebooks/_build.py          # rewrite every notebook this script owns
    .venv/bin/python notebooks/_build.py --check  # exit 1 if a notebook differs from its source here

The notebooks are the reviewable output of this file: edit the cells here, run the script, commit
both. Outputs are empty (papermill and the tests execute them). report.ipynb is not written here
(sedviz.report owns it).

Every notebook has the same frame: a title and an introduction citing its paper, one cell tagged
``parameters`` (a typed assignment with a comment each, so ``papermill --help-notebook`` documents
it), a setup cell, and the ``load`` cell that turns ``store`` into the Dataset.
"""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}

Y = ('Yunis et al., "Approaching Deep Learning through the Spectral Dynamics of Weights" (2024)')
S = ('Xu, "Spectral Edge Dynamics of Training Trajectories: Signal-Noise Geometry Across Scales" '
     '(arXiv 2603.15678, 2026)')
D = ('Xu, "Optimizer-Induced Low-Dimensional Drift and Transverse Dynamics in Transformer Training" '
     '(arXiv 2602.23696, 2026)')
DEMO = ("The default data is the demo shipped with sedviz: modular addition (a + b mod p) learned by a "
        "one-layer transformer (Power et al. 2022; Nanda et al. 2023), run `grok_wd1` with weight decay 1.0, "
        "which memorizes and then groks, and run `grok_wd0` with weight decay 0, the control that memorizes "
        "and never generalizes.")

STORE_PARAM = ('store: Union[str, list[str]] = "demo"  # "demo" (the demo shipped with sedviz), a store '
               '(Zarr folder or .nc file), or a list of run folders (computed into a temporary store)')

SETUP = '''\
import json
import tempfile
from pathlib import Path

import holoviews as hv
import numpy as np
import pandas as pd
import xarray as xr
from IPython.display import Markdown, display

import sedviz
from sedviz import analysis, plots, widgets

from sedviz.report import show

# Importing sedviz.plots ran hv.extension("bokeh", inline=True) once in this kernel: BokehJS is in
# the page, so the explorers and the figures below draw offline (SEDVIZ_BOKEHJS=cdn or off changes that).
# show(fig) embeds a HoloViews figure as a plain Bokeh document: no Panel stylesheets from a CDN.
_ = plots.load_bokehjs()'''

LOAD = '''\
def load(source, **compute_options):
    """The Dataset: "demo", a store (Zarr folder or netCDF file), or run folders computed into a temporary store."""
    if source == "demo":
        return sedviz.load_demo()
    paths = [Path(source)] if isinstance(source, (str, Path)) else [Path(p) for p in source]
    if len(paths) == 1 and (paths[0].suffix in (".zarr", ".nc") or (paths[0] / "zarr.json").exists()
                            or (paths[0] / ".zgroup").exists()):
        return sedviz.open(paths[0])
    tmp = Path(tempfile.mkdtemp(prefix="sedviz-"))
    return sedviz.compute([str(p) for p in paths], store=tmp / "spectra.zarr", progress=False, **compute_options)


ds = load(store{compute})
runs = ds.run.values.tolist()
print(f"{{len(runs)}} runs: {{runs}}; {{ds.sizes['step']}} steps; {{ds.sizes['layer']}} layers")'''

MD_TABLE = '''\
def md_table(df, digits=3):
    """A pandas DataFrame as a Markdown table (NaN shown as "-")."""
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return "-" if not np.isfinite(v) else (f"{v:.0f}" if float(v).is_integer() else f"{v:.{digits}g}")
        return str(v)
    cols = [df.index.name or ""] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join([str(i)] + [cell(v) for v in row]) + " |" for i, row in zip(df.index, df.values)]
    return Markdown("\\n".join(lines))'''


def md(text: str):
    return nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str):
    return nbformat.v4.new_code_cell(textwrap.dedent(text).strip())


def parameters(text: str):
    cell = code(text)
    cell.metadata["tags"] = ["parameters"]
    return cell


def frame(title: str, intro: str, params: str, *, compute: str = "", extra_setup: str = "") -> list:
    """Title and intro, the parameters cell, setup and the load cell."""
    params = textwrap.dedent(params).strip().replace("STORE_PARAM", STORE_PARAM)
    return [
        md(f"# {title}\n\n{textwrap.dedent(intro).strip()}"),
        md("""
            ## Parameters

            Defaults run on the demo data. Papermill overrides them, e.g.
            `papermill NOTEBOOK.ipynb out.ipynb -p store spectra.zarr -p run my_run`;
            `papermill --help-notebook NOTEBOOK.ipynb` lists them.
        """),
        parameters(params),
        code(SETUP + ("\n\n" + textwrap.dedent(extra_setup).strip() if extra_setup else "")),
        code(LOAD.format(compute=compute)),
    ]


# ------------------------------------------------------------------------------------------------
# quickstart


def quickstart() -> list:
    cells = frame(
        "sedviz quick start",
        f"""
        sedviz turns folders of training checkpoints into one `xarray.Dataset` of singular-value spectra and the
        measures built on them, and lets you look at it in JupyterLab. This notebook loads a Dataset, prints what
        is in it, draws the loss curves and the effective rank of every layer, and opens two live explorers.
        The measures follow {Y}; the trajectory analyses of the later notebooks follow {S}.
        {DEMO}
        """,
        """
        from typing import Union

        STORE_PARAM
        run: str = "grok_wd1"  # the run the explorers open on
        layer: str = ""  # the layer (parameter name) the explorers open on; empty for the first MLP input matrix, else the first layer
        """,
    )
    cells += [
        md("""
            ## What is in the Dataset

            One row per run: its checkpoints, and for every layer (a weight matrix) its kind, shape, normalized effective
            rank at the first and last checkpoint and last spectral norm. `ds` is plain xarray: `ds.sv.sel(run=...)`,
            `ds.eff_rank.plot()` and the rest work as usual (docs/schema.md lists every variable).
        """),
        code("""
            from sedviz.summary import summary

            print(summary(ds))
        """),
        code("""
            # The layer the explorers open on: the MLP input matrix holds the clearest spectral change in the demo.
            layer = layer or (ds.sed.layers(kind="mlp_in") + ds.sed.layers())[0]
            layer
        """),
        md("""
            ## Loss and accuracy

            From the runs' metric logs: training solid, validation dashed, log-scaled loss. In the demo both runs reach
            100% training accuracy early (memorization); only `grok_wd1` later jumps to ~100% validation accuracy
            (grokking), long after its training loss has flattened.
        """),
        code("show(plots.plot_loss(ds, logy=True))"),
        md("""
            ## Effective rank of every layer

            `eff_rank` is exp(entropy of s / sum s) divided by the matrix rank (Yunis et al. Eqn 1-2): 1 for a flat
            spectrum, small when a few directions dominate. Rows are layers, columns checkpoints, one panel per run.
            Look for the rank *falling* in the run with weight decay around the time it generalizes, and staying high in
            the control.
        """),
        code("show(plots.plot_eff_rank(ds, layout=True))"),
        md("""
            ## Explorer: singular values of one layer

            Pick a run and a layer; the slider `ranks` chooses which singular values (0 = the largest) are drawn, `steps`
            the range of training, and `logy` the axis. The plot updates in place. Look for a few top singular values
            separating from the bulk as training goes on: the low-rank structure Yunis et al. see in every setting.
        """),
        code("widgets.sv_explorer(ds, run=run, layer=layer)"),
        md("""
            ## Explorer: compare runs

            One variable over steps, one curve per run. Choose `var` (e.g. `eff_rank`, `spectral_norm`,
            `stable_rank`, `val_acc`), the `layer` or `pair` when it has one, and whether to overlay the runs or
            draw them side by side. With the demo, compare `eff_rank` of a layer in `grok_wd1` and `grok_wd0`.
        """),
        code('widgets.compare_explorer(ds, var="eff_rank", layer=layer)'),
        md("""
            ## Where next

            - `01_singular_values_and_rank.ipynb`: singular values, effective rank, runs compared.
            - `02_alignment_and_agreement.ipynb`: alignment of consecutive layers, agreement with the final checkpoint.
            - `03_pruning_and_connectivity.ipynb`: SVD and magnitude pruning, linear mode connectivity.
            - `04_spectral_edge_and_lag_flip.ipynb`: the spectral edge of the update trajectory and the lag flip.
            - `05_early_warning.ipynb`: did a run grok, and how early could we have known.
            - `06_drift.ipynb`: the low-dimensional drift of the whole trajectory.

            Point any of them at your own runs with `store` (a store from `sedviz compute`, or run folders).
        """),
    ]
    return cells


# ------------------------------------------------------------------------------------------------
# 01


def nb01() -> list:
    cells = frame(
        "01 Singular values and effective rank",
        f"""
        How do the singular values of each weight matrix evolve during training? Following {Y} (Sec. 4.1, Eqn 1-2),
        sedviz takes the singular values `sv` of every matrix (biases and norm scales skipped; convolutions reshaped
        to out x in*k*k) at every checkpoint, and summarizes each spectrum by its normalized effective rank `eff_rank`.
        Yunis et al. find that training with weight decay drives matrices toward low rank, and that grokking coincides
        with that rank collapse. This notebook draws the spectra, the effective rank of every layer, and compares runs.
        {DEMO}
        """,
        """
        from typing import Union

        STORE_PARAM
        run: str = "grok_wd1"  # run whose singular values are drawn first
        layer: str = ""  # layer (parameter name) of the singular-value plots; empty for the first MLP input matrix, else the first layer
        layers: str = "all"  # rows of the effective-rank heat maps: "all", a layer kind or kind prefix (e.g. "attn", "mlp"), or a layer name
        ranks: int = 20  # how many of the largest singular values to draw
        logy: bool = True  # log-scaled singular values
        compare_var: str = "eff_rank"  # variable compared across runs: one over (run, step, layer) such as eff_rank, stable_rank, spectral_norm, fro_norm
        """,
    )
    cells += [
        code("""
            layer = layer or (ds.sed.layers(kind="mlp_in") + ds.sed.layers())[0]
            layer_list = ds.sed.layers() if layers == "all" else [layers] if layers in ds.layer else ds.sed.layers(kind=layers)
            assert layer_list, f"layers={layers!r} matches no layer; layers: {ds.sed.layers()}, kinds: {sorted(set(ds.layer_kind.values.tolist()))}"
            print(f"layer: {layer}\\nheat map rows: {layer_list}")
        """),
        md("""
            ## Singular values over training

            The top `ranks` singular values of `layer` in `run`, one line per rank (dark = largest). Look for a few top
            values pulling away from the rest: training builds a low-rank structure on top of a random bulk. With weight
            decay the bulk then shrinks, so the gap widens.
        """),
        code("show(plots.plot_sv(ds, run, layer, ranks=(0, ranks), logy=logy))"),
        md("""
            ### The same layer in every run

            Side by side, same axes. In the demo the control (`grok_wd0`) keeps a wide spectrum: its bulk never
            shrinks, which is why its effective rank stays high.
        """),
        code("""
            show(hv.Layout([plots.plot_sv(ds, r, layer, ranks=(0, ranks), logy=logy) for r in runs]).cols(1))
        """),
        md("""
            ## Effective rank heat maps

            `eff_rank` per layer (rows) and checkpoint (columns), one panel per run, one colour scale. A colour that
            darkens over time is a layer whose spectrum concentrates on fewer directions. Compare the panels: the run
            with weight decay loses rank where the control does not.
        """),
        code("show(plots.plot_eff_rank(ds, layers=layer_list, layout=True))"),
        md("""
            First and last checkpoint of each run, as numbers:
        """),
        code("""
            table = {}
            for r in runs:
                e = ds["eff_rank"].sel(run=r, layer=layer_list).dropna("step", how="all")
                table[(r, f"step {int(e.step[0])}")] = e.isel(step=0).to_series()
                table[(r, f"step {int(e.step[-1])}")] = e.isel(step=-1).to_series()
            pd.DataFrame(table).round(3)
        """),
        md("""
            ## Runs compared

            `compare_var` of `layer` over training, one curve per run, and beside it validation accuracy for reference.
            Look for the effective rank of the run with weight decay dropping around the step its validation accuracy
            rises (its grok step).
        """),
        code("""
            kw = {"layer": layer} if "layer" in ds[compare_var].dims else {}
            panels = [plots.plot_compare(ds, compare_var, **kw)]
            if "val_acc" in ds.data_vars:
                panels.append(plots.plot_compare(ds, "val_acc"))
            show(hv.Layout(panels).cols(1))
        """),
        md("""
            ## Explorers

            Live versions of the plots above; every control redraws in place.

            - `sv_explorer`: singular values of any run and layer; drag `ranks` and `steps`.
            - `eff_rank_explorer`: the effective-rank heat map of one run over a chosen step range.
            - `compare_explorer`: any (run, step[, layer | pair]) variable across runs.
        """),
        code("widgets.sv_explorer(ds, run=run, layer=layer, ranks=(0, ranks), logy=logy)"),
        code("widgets.eff_rank_explorer(ds, run=run)"),
        code("widgets.compare_explorer(ds, var=compare_var, layer=layer)"),
    ]
    return cells


# ------------------------------------------------------------------------------------------------
# 02


def nb02() -> list:
    cells = frame(
        "02 Alignment between layers and agreement with the final checkpoint",
        f"""
        Do consecutive layers line up, and when do singular vectors settle? Following {Y} (Sec. 4.1, Eqn 3-5):
        the *alignment* `align` of a consecutive pair (e.g. MLP input -> MLP output) is the diagonal of
        A_jk = |<u_j, v'_k>|, the output-side singular vectors of the earlier matrix against the input-side vectors
        of the later one; its score `align_score` is the mean of the first 10 entries. The *agreement* `sva` of a layer
        with the run's final checkpoint is the diagonal of |<u_j(t), u_k(T)>| |<v_j(t), v_k(T)>|; `sva_score` is its
        mean over the top 10. Yunis et al. find alignment rising during training, and the top singular vectors
        reaching their final direction well before the end. {DEMO}
        """,
        """
        from typing import Union

        STORE_PARAM
        run: str = "grok_wd1"  # run of the alignment and agreement heat maps
        pair: str = ""  # consecutive pair "src -> dst"; empty for the pair with the highest align_score at the run's last checkpoint
        layer: str = ""  # layer (parameter name) of the agreement heat map; empty for the first MLP input matrix, else the first layer
        ranks: int = 100  # how many leading ranks the diagonal heat maps show (Yunis et al. show 100)
        """,
    )
    cells += [
        code("""
            # The pair shown by default: the best aligned one at the run's last checkpoint.
            final_score = ds["align_score"].sel(run=run).dropna("step", how="all").isel(step=-1)
            pair = pair or str(final_score.idxmax("pair").values)
            layer = layer or (ds.sed.layers(kind="mlp_in") + ds.sed.layers())[0]
            print(f"pair: {pair}\\nlayer: {layer}")
            final_score.to_series().round(3).to_frame(f"align_score at step {int(final_score.step)}")
        """),
        md("""
            ## Alignment of one pair

            Rank (rows, 0 = top singular direction on top) against step. Bright = the j-th output direction of the
            earlier layer coincides with the j-th input direction of the later one. Look for the top rows lighting up as
            training proceeds: the two matrices organize around shared directions, as in Yunis et al. Fig. 3. Unrelated
            directions give values near 1/sqrt(dimension). Not every pair aligns: in the demo the attention pairs do
            (the per-head query-key pair most), while the MLP input -> output pair, with a ReLU between, stays near that
            baseline; the table above ranks the pairs.
        """),
        code("show(plots.plot_align(ds, run, pair, ranks=(0, ranks)))"),
        md("""
            ## Alignment score of every pair

            `align_score` (mean of the top 10 diagonal entries) per pair and step, one panel per run, colours on [0, 1].
            Compare the runs: which pairs align, and when.
        """),
        code("show(plots.plot_align_score(ds, layout=True))"),
        code('show(plots.plot_compare(ds, "align_score", pair=pair))'),
        md("""
            ## Agreement with the final checkpoint

            For `layer`: how close each top singular direction at step t is to its direction at the run's last
            checkpoint (the last column is 1 by definition). Look for *when* the top ranks become bright: Yunis et al. find
            them settling well before the end while lower ranks keep changing. A run whose weights keep reorganizing
            late, as the demo's grokking run does after it generalizes, settles only near the end.
        """),
        code("show(plots.plot_sva(ds, run, layer, ranks=(0, ranks)))"),
        code("show(plots.plot_sva_score(ds, layout=True))"),
        md("""
            Step at which each layer's `sva_score` first reaches 0.9 (its top directions are settled), per run:
        """),
        code("""
            settled = {}
            for r in runs:
                s = ds["sva_score"].sel(run=r).dropna("step", how="all")
                reached = s >= 0.9
                first = s.step.where(reached).min("step")  # NaN when never reached
                settled[r] = first.to_series()
            pd.DataFrame(settled)
        """),
        code('show(plots.plot_compare(ds, "sva_score", layer=layer))'),
        md("""
            ## Explorers

            - `align_explorer`: the alignment diagonal of any run and pair; `ranks` and `steps` sliders.
            - `sva_explorer`: the agreement diagonal of any run and layer.
        """),
        code("widgets.align_explorer(ds, run=run, pair=pair, ranks=(0, ranks))"),
        code("widgets.sva_explorer(ds, run=run, layer=layer, ranks=(0, ranks))"),
    ]
    return cells


# ------------------------------------------------------------------------------------------------
# 03


def nb03() -> list:
    cells = frame(
        "03 Pruning and linear mode connectivity",
        f"""
        Which directions carry the function, and are two solutions connected? Following {Y} (Sec. 4.2 Fig. 4,
        Sec. 7.2 Fig. 10, Eqn 6, App. A.9): *SVD pruning* keeps the top (or the bottom) fraction of singular triplets
        of every matrix but the last and evaluates the rebuilt model; *magnitude pruning* keeps the largest weights
        under one global threshold, against a random mask of the same per-layer density; *linear mode connectivity*
        evaluates the model along the straight line between two endpoints and reports the barrier above the chord;
        *perturbation* adds relative Gaussian noise to every matrix. These analyses rebuild models, so they need
        the model's code: `model_factory` builds it, `evaluate(model)` scores it (loss and accuracy), both given as
        "package.module:function". The checkpoints come from the store (`ds.attrs["checkpoints"]`); the demo ships
        the final checkpoint of each run. {DEMO}
        """,
        """
        from typing import Union

        STORE_PARAM
        model_factory: str = "sedviz.demo:make_model"  # "package.module:function" building the (untrained) model of the store's checkpoints
        evaluate: str = "sedviz.demo:evaluate"  # "package.module:function" scoring a model: a loss, or {"loss": ..., "acc": ...}
        fractions: list[float] = [0.05, 0.1, 0.25, 0.5, 0.75, 1.0]  # kept fractions of singular triplets for SVD pruning, each in (0, 1]
        density: float = 0.5  # kept fraction of weights for magnitude pruning and its random control
        run_a: str = "grok_wd1"  # first endpoint of linear mode connectivity (its final checkpoint); also the perturbed run
        run_b: str = "grok_wd0"  # second endpoint (its final checkpoint)
        n_alphas: int = 11  # evenly spaced interpolation points in [0, 1], endpoints included
        etas: list[float] = [0.05, 0.2, 0.5]  # relative perturbation sizes eta (W + eta ||W|| eps / ||eps||)
        seed: int = 0  # seed of the random mask and of the perturbations
        """,
        extra_setup="from sedviz.io import read_state  # safe loading of a checkpoint (weights only)",
    )
    cells += [
        md("""
            ## SVD pruning

            For every run's final checkpoint: loss and accuracy of the model when every matrix but the last keeps only
            its top (blue) or bottom (orange) `fraction` of singular triplets; grey is the unpruned model. Bars at the
            fraction nearest 0.5, curves over all fractions. Look for the top directions alone keeping most of the
            accuracy of the run that generalized, while the bottom directions carry almost nothing: Yunis et al.
            Fig. 4. A run that memorized without generalizing relies on many more directions.
        """),
        code("""
            prune = analysis.prune_curves(ds, model_factory, evaluate, fractions=fractions)
            show(plots.plot_prune(prune))
        """),
        code("""
            # One checkpoint per run (its final one): max over step just drops the other runs' NaN steps.
            prune["prune_acc"].max("step").to_dataframe().unstack("fraction")["prune_acc"].round(3)
        """),
        md("""
            ## Magnitude pruning against a random mask

            One global threshold keeps the `density` largest weights of all matrices but the last; the control keeps as
            many weights per layer at random. Look for the magnitude mask keeping accuracy where the random mask destroys
            it, and for the magnitude mask keeping the top singular directions (`mask_sva_score` near 1) while the random
            mask scrambles them (Yunis et al. Sec. 7.2, Fig. 10).
        """),
        code("""
            mask = analysis.masks(ds, model_factory, evaluate, density=density, seed=seed)
            show(plots.plot_masks(mask))
        """),
        code("""
            # Agreement of the masked with the unmasked matrices (mean of the top 10 singular-vector pairs), final checkpoints.
            mask["mask_sva_score"].max("step").sel(mask=["magnitude", "random"]).to_dataframe()["mask_sva_score"].unstack("layer").round(3)
        """),
        md("""
            ## Linear mode connectivity between the two runs

            Loss along theta(alpha) = (1 - alpha) theta_a + alpha theta_b between the final checkpoints of `run_a` and
            `run_b` (dashed: the straight chord between the end losses). The barrier is the largest excess of the path
            over the chord (Yunis et al. Eqn 6): near 0 when the endpoints are linearly connected, positive for a ridge
            between them. A negative barrier means the path stays below the chord, which happens when one endpoint is far
            worse than the other (in the demo the control's validation loss is huge): then read the accuracy along the
            path. The table gives the agreement of the endpoints' singular vectors per layer; near 0 means the runs found
            unrelated directions.
        """),
        code("""
            lmc_runs = analysis.lmc((ds, run_a, "final"), (ds, run_b, "final"), model_factory, evaluate, n_alphas=n_alphas)
            print(f"barrier: {float(lmc_runs['barrier']):.4g}")
            show(plots.plot_lmc(lmc_runs) + plots.plot_lmc(lmc_runs, var="lmc_acc"))
        """),
        code("""
            lmc_runs["endpoint_sva_score"].to_series().round(3).to_frame()
        """),
        md("""
            ## Perturbation and connectivity

            The final checkpoint of `run_a` perturbed by relative noise of size eta in every matrix (norm kept), then
            linear mode connectivity between the original and the perturbed weights, one curve per eta. Small
            perturbations of a solution the optimizer settled into stay in its basin (barrier near 0); larger ones
            leave it (Yunis et al. App. A.9).
        """),
        code("""
            ckpts = json.loads(ds.attrs["checkpoints"])[run_a]  # {step: path}
            final_path = ckpts[max(ckpts, key=int)]
            state = read_state(final_path)
            perturbed = [analysis.lmc(state, analysis.perturb(state, eta, seed=seed), model_factory, evaluate, n_alphas=n_alphas)
                         for eta in etas]
            lmc_eta = xr.concat(perturbed, dim=pd.Index(etas, name="eta"))
            lmc_eta.attrs["endpoints"] = json.dumps({"a": f"{run_a} final", "b": f"{run_a} final + noise eta"})
            display(lmc_eta["barrier"].to_series().round(4).to_frame())
            show(plots.plot_lmc(lmc_eta))
        """),
    ]
    return cells


# ------------------------------------------------------------------------------------------------
# 04


def nb04() -> list:
    cells = frame(
        "04 Spectral edge and the lag flip",
        f"""
        Where is the signal in the update trajectory, and how does it couple to the validation loss? Following {S}:
        a window of W consecutive updates d_i = theta_i - theta_(i-1) forms a W x P matrix; its singular values
        s_1 >= ... >= s_W (from the W x W Gram, exact from the stored update dot products or approximately from
        the stored random sketches) split into a few signal directions and a noise bulk. The gap ratio
        r_k = s_k / s_(k+1) peaks at the signal rank k*, and the *spectral edge* is the series r_(k*) over training
        (docs/methods.md#spectral-edge). It rises, holds a plateau and collapses; Xu relates those phases to the loss. The *lag flip*
        (docs/methods.md#lag-flip): the cross-correlation of the detrended edge with the detrended validation loss peaks at a lag
        whose sign changes with the window size. {DEMO}
        """,
        """
        from typing import Union

        STORE_PARAM
        run: str = "grok_wd1"  # run drawn first and opened by the explorers
        windows: list[int] = [10, 20]  # window sizes W of the spectral edge, in checkpoints (Xu uses 10 and 20)
        lag_windows: list[int] = [5, 10, 15, 20]  # window sizes of the lag flip and of the explorers' window slider
        layers: str = "all"  # parameter group of the trajectory: "all" (the whole model), a kind or kind prefix such as "attn", or a parameter name
        threshold: float = 1.2  # tau: the collapse step is the first step after the peak where the edge falls below it
        """,
        compute=", windows=tuple(sorted(set(windows) | set(lag_windows)))",
    )
    cells += [
        code("""
            group = None if layers == "all" else layers  # the analyses' name for the whole model
            edge = analysis.edge(ds, windows=windows, params=group)
            phases = analysis.phases(edge, threshold=threshold)
            edge
        """),
        md("""
            ## The spectral edge and its phases

            The edge series r_(k*) for each window size, the rise (green), plateau (blue) and collapse (red) shaded,
            the peak dotted and the collapse step dashed; the validation loss on the right axis. Look for the plateau
            and collapse lining up with the change in the loss: in the demo, the grokking run's edge collapses where its
            validation loss starts to fall, well before its validation accuracy reaches 0.9.
        """),
        code("""
            show(hv.Layout([plots.plot_edge(edge, run, w, phases_ds=phases, ds=ds if "val_loss" in ds else None)
                            for w in edge.window.values.tolist()]).cols(1))
        """),
        code("""
            cols = ["peak_step", "peak_value", "plateau_start", "plateau_end", "collapse_step"]
            phases[cols].to_dataframe()[cols]
        """),
        md("""
            ### Every run, largest window

            The same series for each run, one above the other: in the demo the control's edge peaks early and never
            falls below tau, so it has no collapse step.
        """),
        code("""
            w_max = int(edge.window.max())
            show(hv.Layout([plots.plot_edge(edge, r, w_max, phases_ds=phases) for r in runs]).cols(1))
        """),
        md("""
            ## Signal rank k* per window

            k* = argmax_k r_k in every window, and the run's k* (its mode), which fixes the edge series above
            (e.g. s2/s3 when k* = 2). Look for a stable, small k*: a few signal directions over a noise bulk.
        """),
        code("""
            display(edge["k_star_mode"].to_pandas().rename_axis(index="run", columns="window"))
            show(hv.Layout([plots.plot_compare(edge.sel(window=w), "k_star").opts(title=f"k_star: window={w}")
                            for w in edge.window.values.tolist()]).cols(1))
        """),
        md("""
            ## Sketch against exact

            The store keeps both the exact inner products of updates (up to some lag) and a random sketch of every
            checkpoint, so window spectra of any size come from the Dataset alone. Where both can serve a window size,
            `sketch_gap_error` is the relative error of the sketched gap ratios r_k in each window and `sketch_error`
            its mean (Xu reports within 5.7% on average; docs/methods.md#spectral-edge). A mean hides the worst windows, so the second
            table gives the median, 90th percentile and maximum over windows of the error of the edge r_(k*). Where a
            window size can only come from the sketch, `edge_rel_se` is the sketch's own error estimate of each edge
            value (a jackknife over groups of sketch coordinates; docs/schema.md, "Sketch error").
        """),
        code("""
            print("Gram source per window:", dict(zip(edge.window.values.tolist(), edge["edge_source"].values.tolist())))
            if "sketch_error" in edge:
                err = edge["sketch_error"].sel(edge_k=[1, 2, 3]).to_dataframe()["sketch_error"].unstack("edge_k")
                display(err.rename(columns=lambda k: f"mean error r_{k}").round(4))
                rows = {}
                for r in runs:
                    for w in edge.window.values.tolist():
                        k = edge["k_star_mode"].sel(run=r, window=w).item()
                        if np.isfinite(k):
                            e = edge["sketch_gap_error"].sel(run=r, window=w, edge_k=int(k)).dropna("step").values
                            if e.size:
                                rows[(r, w)] = {"k*": int(k), "median": np.median(e), "90%": np.quantile(e, 0.9),
                                                "max": e.max(), "windows": e.size}
                display(pd.DataFrame(rows).T.rename_axis(["run", "window"]).round(4))
            else:
                print("this Dataset cannot compute both the exact and the sketched spectra for these windows; no error to show")
        """),
        md("""
            ## The lag flip

            Cross-correlation r(lag) = Pearson(edge[t], val_loss[t + lag]) after removing a cubic trend from each, one
            curve per window size; diamonds mark each window's peak, the lag of the largest |r| (with its sign). A
            positive peak lag means the spectral edge leads the loss. Xu reports the peak lag changing sign as the window
            grows (-1 at W = 10 to +1 at W = 20). Two smooth series correlate at some lag by chance, so each peak is
            tested against 999 phase-randomised copies of the edge (same spectrum, no coupling with the loss): the
            shaded band is where 95% of their |r| stay at each lag, and `p_value` is the share of copies whose largest
            |r| reaches the observed one. A peak counts (`peak_verdict` "significant") when p < 0.05 and it is not at
            an end of the lag range; the run flips only when counted peaks have lags of both signs. The verdict below
            the plot says so in words. The table adds Granger tests in both directions.
        """),
        code("""
            lag = analysis.lag_flip(ds, windows=lag_windows, params=group)
            show(plots.plot_lag_flip(lag, run))
            for r in runs:
                print(f"{r}: {lag['flip_text'].sel(run=r).item()}")
        """),
        code("""
            cols = ["peak_lag", "peak_r", "p_value", "peak_verdict", "granger_p_x2y", "granger_p_y2x", "n_points"]
            lag[cols].to_dataframe()[cols].round(4)
        """),
        md("""
            ## Explorers

            - `edge_explorer`: the edge series with phases and validation loss; slide the window size and pick the run.
            - `lag_flip_explorer`: the cross-correlation curves; the window slider draws the chosen window's curve on top.

            Both reuse the analyses computed above (`edge_ds=`, `lag_ds=`).
        """),
        code("""
            edge_all = analysis.edge(ds, windows=lag_windows, params=group)
            first = next((w for w in windows if w in lag_windows), None)  # open on the first edge window when it is there
            widgets.edge_explorer(ds, lag_windows, layers=group, edge_ds=edge_all,
                                  phases_ds=analysis.phases(edge_all, threshold=threshold), run=run, window=first)
        """),
        code("widgets.lag_flip_explorer(ds, lag_windows, lag_ds=lag, run=run)"),
    ]
    return cells


# ------------------------------------------------------------------------------------------------
# 05


def nb05() -> list:
    cells = frame(
        "05 Grokking early warning",
        f"""
        Did a run grok, and how early could we have known? The grok step is the first step where validation
        accuracy reaches `threshold_acc` (docs/methods.md#early-warning). Each detector watches one signal from the memorization step on
        (training accuracy >= 0.99) and fires once its rule has held for `persist` consecutive checkpoints:
        *wnorm* when the total weight norm has fallen 2% below its peak, *erank* when the mean effective rank of the
        attention and MLP matrices has fallen, *val_loss* when validation loss has fallen well below its peak, and
        the spectral detectors of the grokking companion of {S}: *slope* (log(s2/s3) of the update windows rises
        fast) and *g23* (s2^2 - s3^2 builds up, then collapses). *wnorm* is the default: on the held-out half of
        the grokking suite (docs/suite.md) it was the best of these; its measured hit rate, false alarms and lead are
        there. A detector can fire before the grok (a warning), after it (too late to be of use), not at all (a
        miss), or on a run that never grokked (a false alarm); every outcome is spelled out below.
        {DEMO}
        """,
        """
        from typing import Union

        STORE_PARAM
        threshold_acc: float = 0.9  # validation accuracy that defines the grok step
        window: int = 10  # window size W of the update Gram of slope and g23, in checkpoints
        params: str = "attn"  # parameter group slope and g23 watch: a kind or kind prefix ("attn"), a parameter name, or "all"
        detectors: list[str] = ["wnorm", "g23", "slope"]  # any of wnorm, erank, val_loss, wnorm_erank, slope, g23
        persist: int = 0  # consecutive checkpoints a detector's rule must hold before it fires; 0: each detector's default
        """,
        extra_setup=MD_TABLE,
    )
    cells += [
        code("""
            from sedviz.analysis.warning import describe

            ew = analysis.early_warning(ds, threshold_acc=threshold_acc, window=window, detector=detectors,
                                        params=None if params == "all" else params, persist=persist or None)
            ew[["grok_step", "fire_step", "lead", "status"]]
        """),
        md("""
            ## Grok step, fire step, lead and outcome

            One row per run and detector. The outcome is `fired_before_grok` (a warning, lead > 0),
            `fired_after_grok` (a late warning, of no use), `not_fired` (the run grokked, the detector missed it),
            `fired_no_grok` (a false alarm) or `silent_no_grok` (the run never grokked and the detector stayed silent).
            In the demo, wnorm fires on the control `grok_wd0` at step 2500, where its weight norm dips 2% after a loss
            spike: a false alarm of the default tuned on the grokking suite (docs/suite.md).
        """),
        code("""
            rows = []
            for r in ew.run.values.tolist():
                for d in ew.detector.values.tolist():
                    fired = bool(ew["fired"].sel(run=r, detector=d))
                    rows.append({"run / detector": f"{r} / {d}", "grok step": float(ew["grok_step"].sel(run=r)),
                                 "fire step": float(ew["fire_step"].sel(run=r, detector=d)),
                                 "lead (steps)": float(ew["lead"].sel(run=r, detector=d)),
                                 "fired": "yes" if fired else "no", "outcome": str(ew["status"].sel(run=r, detector=d).values)})
            warning_table = pd.DataFrame(rows).set_index("run / detector")
            md_table(warning_table)
        """),
        md("""
            In words, per run and detector. A warning after the grok is reported as late, not as a success; a
            detector that fires on a run that never grokked is a false alarm:
        """),
        code("""
            for r in ew.run.values.tolist():
                for d in ew.detector.values.tolist():
                    print(describe(ew, r, d))
        """),
        md("""
            ## The signals

            One panel per detector: the signal of every run, its fire step dashed and its grok step solid in the run's
            colour, the rule's threshold dotted; the last panel is validation accuracy with the grok steps. For
            wnorm and erank the signal is the fractional drop below the running maximum since memorization.
        """),
        code("show(plots.plot_warning(ew, ds if \"val_acc\" in ds else None))"),
        md("""
            ## s2 / s3 of the update windows

            The ratio slope and g23 are built on, per run. Windows holding an Adam loss spike are excluded from
            their rules (`ew.usable`); their ratio reflects the spike.
        """),
        code('show(plots.plot_compare(ew, "s2_s3"))'),
    ]
    return cells


# ------------------------------------------------------------------------------------------------
# 06


def nb06() -> list:
    cells = frame(
        "06 Drift of the training trajectory",
        f"""
        Does training move along one direction? Following {D} (docs/methods.md#drift): the rows x_t = theta_t - theta_0 of
        every checkpoint, normalized to unit length and not centered, are decomposed by PCA (through their Gram
        matrix, from the stored update products or sketches). The first principal direction v_b is the *drift
        backbone*. Its *PC1 share* says how much of the normalized trajectory it explains; the *backbone share*
        a(t)^2 / ||x_t||^2 says how much of the displacement at step t lies along it; the *update alignment*
        C(t) = <d_t, v_b> / ||d_t|| says whether each update still pushes along it or moves transversally. Xu finds
        AdamW training of transformers dominated by such a low-dimensional drift. {DEMO}
        """,
        """
        from typing import Union

        STORE_PARAM
        layers: str = "all"  # parameter group of the trajectory: "all" (the whole model), a kind or kind prefix such as "attn", or a parameter name
        window: int = 10  # rows of the rolling PC1 and its stability between adjacent windows; 0 skips them
        """,
        extra_setup=MD_TABLE,
    )
    cells += [
        code("""
            drift = analysis.drift(ds, params=None if layers == "all" else layers, window=window or None)
            drift
        """),
        md("""
            ## PC1 share

            The share of the normalized trajectory explained by its first principal direction, per run (1 = a straight
            line from the start). Look for a large share: most of the motion is along one backbone. In the demo the
            control drifts almost straight, while the grokking run turns as it generalizes: a smaller share.
        """),
        code("""
            share = pd.DataFrame({"PC1 share": drift["drift_pc1_share"].to_series(), "rows": drift["n_rows"].to_series(),
                                  "Gram from": drift["drift_source"].to_series()})
            md_table(share)
        """),
        md("""
            ## Backbone share over training

            a(t)^2 / ||x_t||^2 for every run. Early displacements are noisy and point elsewhere; look for the share
            climbing towards 1 as the drift takes over, and for where a run leaves its backbone (in the demo, the grokking
            run as its validation accuracy rises).
        """),
        code("show(plots.plot_drift(drift))"),
        md("""
            ## Update alignment

            C(t) = <d_t, v_b> / ||d_t||: +1 when an update moves straight along the backbone, 0 when it is transverse.
            Look for updates that stop pushing along the backbone (C near 0) or turn against it (C < 0), and compare
            with validation accuracy below.
        """),
        code("""
            panels = [plots.plot_compare(drift, "update_alignment"), plots.plot_compare(drift, "residual")]
            if "val_acc" in ds:
                panels.append(plots.plot_compare(ds, "val_acc"))
            show(hv.Layout(panels).cols(1))
        """),
        md("""
            ## Rolling PC1

            With `window` > 0: the PC1 share of the `window` most recent rows, and the stability |<v_w, v_(w+1)>| of
            the principal direction between adjacent windows. A stable direction (near 1) is a backbone that persists;
            drops mark the trajectory turning.
        """),
        code("""
            if window:
                show(hv.Layout([plots.plot_compare(drift, "rolling_pc1_share"),
                                plots.plot_compare(drift, "pc1_stability")]).cols(1))
            else:
                print("window = 0: rolling PC1 skipped")
        """),
    ]
    return cells


NOTEBOOKS = {
    "quickstart.ipynb": quickstart,
    "01_singular_values_and_rank.ipynb": nb01,
    "02_alignment_and_agreement.ipynb": nb02,
    "03_pruning_and_connectivity.ipynb": nb03,
    "04_spectral_edge_and_lag_flip.ipynb": nb04,
    "05_early_warning.ipynb": nb05,
    "06_drift.ipynb": nb06,
}


def build(name: str):
    nb = nbformat.v4.new_notebook()
    nb.cells = NOTEBOOKS[name]()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):  # stable ids: rebuilding gives the same file
        cell["id"] = f"{Path(name).stem[:20].replace('_', '-')}-{i:02d}"
    nbformat.validate(nb)
    return nb


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name in NOTEBOOKS:
        text = nbformat.writes(build(name)) + "\n"
        path = HERE / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date (run notebooks/_build.py): {stale}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
