"""The paper's figures as PNG: a metric per layer (Fig. 2a EER, Fig. 4 STOI) and mel
spectrograms of the input and of each layer's reconstruction (Fig. 3)."""

from __future__ import annotations

from pathlib import Path

import kaldiio
import numpy as np

from espnet_probe.probe.summary import read_summary
from espnet_probe.report.results import (REFERENCE_MODELS, TRAINING_ORDER, as_number,
                                         conditions_in, layers_of, models_in)
from espnet_probe.utils.fileio import atomic_path

STYLE = {"baseline": dict(color="tab:blue", marker="o"),
         "robust": dict(color="tab:orange", marker="s"),
         "brought": dict(color="tab:purple", marker="D"),
         "random": dict(color="tab:gray", marker="x", linestyle=":")}
REF_STYLE = {"original": dict(color="black", linestyle="--"),
             "oracle": dict(color="tab:green", linestyle="-.")}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def plot_metric_per_layer(rows: list[dict], metric: str, ylabel: str, path: Path,
                          trainings: tuple[str, ...] = ("baseline", "robust", "brought", "random"),
                          chance: float | None = None) -> bool:
    """Grid: a row per condition, a column per model; a line per training with CI bars, the
    references (and ``chance``, when given) as horizontal lines. False (no file) when the
    metric is absent."""
    sel = [r for r in rows if r["metric"] == metric and as_number(r["value"]) is not None]
    models = models_in(sel)
    if not models:
        return False
    conds = conditions_in(sel)
    plt = _pyplot()
    fig, axes = plt.subplots(len(conds), len(models), squeeze=False, sharey=True,
                             figsize=(4.2 * len(models), 2.6 * len(conds)))
    for i, cond in enumerate(conds):
        for j, model in enumerate(models):
            ax = axes[i][j]
            layers = layers_of([r for r in sel if r["model"] == model], model)
            for training in sorted({r["training"] for r in sel if r["model"] == model},
                                   key=lambda t: TRAINING_ORDER.get(t, 9)):
                if training not in trainings:
                    continue
                pts = {r["layer"]: r for r in sel if r["model"] == model
                       and r["training"] == training and r["condition"] == cond}
                xs = [k for k, layer in enumerate(layers) if layer in pts]
                if not xs:
                    continue
                ys = np.array([as_number(pts[layers[k]]["value"]) for k in xs])
                lo = np.array([as_number(pts[layers[k]]["ci_low"]) or y for k, y in zip(xs, ys)])
                hi = np.array([as_number(pts[layers[k]]["ci_high"]) or y for k, y in zip(xs, ys)])
                ax.errorbar(xs, ys, yerr=[ys - lo, hi - ys], label=training, capsize=2,
                            **STYLE.get(training, {}))
            for ref in REFERENCE_MODELS:
                vals = [as_number(r["value"]) for r in sel
                        if r["model"] == ref and r["condition"] == cond]
                if vals:
                    ax.axhline(vals[0], label=ref, linewidth=1, **REF_STYLE[ref])
            if chance is not None:
                ax.axhline(chance, label="chance", color="gray", linestyle="--", linewidth=1)
            ax.set_xticks(range(len(layers)))
            ax.set_xticklabels(layers, rotation=45, ha="right", fontsize=7)
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(model, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{cond}\n{ylabel}", fontsize=8)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


def _load_mel(scp: Path, utt: str) -> np.ndarray | None:
    if not scp.is_file():
        return None
    for line in scp.read_text().splitlines():
        key, loc = line.split(maxsplit=1)
        if key == utt:
            return np.asarray(kaldiio.load_mat(loc))
    return None


def plot_mel_layers(columns: list[tuple[str, Path, Path]], utt: str, path: Path) -> bool:
    """Fig. 3: one column per (title, probe decode dir, oracle decode dir of the same condition):
    the heard input log-mel on top, then every layer's reconstruction of ``utt``."""
    grids = []
    for title, decode_dir, oracle_dir in columns:
        summary = read_summary(decode_dir)
        mels = [("heard input", _load_mel(oracle_dir / "original" / "mel.scp", utt))]
        mels += [(name, _load_mel(summary.mel_scp(name), utt)) for name in summary.layer_names]
        grids.append((title, [(n, m) for n, m in mels if m is not None]))
    n_rows = max((len(g) for _, g in grids), default=0)
    if n_rows == 0:
        return False
    vmin = min(float(m.min()) for _, g in grids for _, m in g)
    vmax = max(float(m.max()) for _, g in grids for _, m in g)
    plt = _pyplot()
    fig, axes = plt.subplots(n_rows, len(grids), squeeze=False,
                             figsize=(3.2 * len(grids), 1.1 * n_rows))
    for j, (title, grid) in enumerate(grids):
        for i in range(n_rows):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if i >= len(grid):
                ax.axis("off")
                continue
            name, mel = grid[i]
            ax.imshow(mel.T, origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap="magma")
            if j == 0:
                ax.set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
            if i == 0:
                ax.set_title(title, fontsize=8)
    fig.suptitle(f"log-mel of {utt}: input and per-layer reconstructions", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


def plot_probe_curves(records: dict[str, dict], path: Path) -> bool:
    """Each probe's validation L1 per epoch, one panel per experiment (probe_training.json),
    the kept (best) epoch of each layer marked."""
    records = {name: r for name, r in records.items() if r.get("layers")}
    if not records:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(records), squeeze=False, figsize=(4.2 * len(records), 3.0))
    cmap = plt.get_cmap("viridis")
    for ax, (name, record) in zip(axes[0], records.items()):
        layers = list(record["layers"])
        for k, layer in enumerate(layers):
            rec = record["layers"][layer]
            epochs = np.arange(1, len(rec["valid_curve"]) + 1)
            colour = cmap(k / max(1, len(layers) - 1))
            ax.plot(epochs, rec["valid_curve"], color=colour, linewidth=1, label=layer)
            ax.plot([rec["best_epoch"]], [rec["valid_l1"]], marker="o", markersize=3, color=colour)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("epoch", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation L1 (ln-mel)", fontsize=8)
    axes[0][-1].legend(fontsize=6, ncol=2, loc="upper right")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True
