"""The paper's Figure 2: test images with each network's mask, the manual mask and where they differ.

Images are chosen deterministically from the per-image MeanIoU averaged over seeds and then over L2
values: the best, the median and the worst image (ties broken by file name). Each L2 shows the
prediction of its lowest-seed finished trial. A difference map is 0 where network and manual mask
agree and ``k + 1`` where they disagree and the manual mask says class ``k``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lgeseg.data import read_ignore
from lgeseg.errors import UserError
from lgeseg.png import IGNORE_INDEX, read_image, read_mask

from .figures import empty_figure, l2_label
from .load import StudyRecord, TrialRecord
from .stats import nanmean, per_image, trials_by_l2

#: Colours of the difference map's "expected class" values (index 0 = agreement is white).
CLASS_PALETTE: tuple[str, ...] = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")


def select_images(record: StudyRecord) -> list[tuple[str, str]]:
    """``(file, tag)`` for the best, median and worst test image by mean per-image MeanIoU (deduplicated)."""
    values = per_image(record, "MeanIoU")
    if not values:
        return []
    common = set.intersection(*(set(v) for v in values.values()))
    scores = {f: nanmean([values[l2][f] for l2 in values]) for f in common}
    ranked = sorted((s, f) for f, s in scores.items() if not math.isnan(s))
    if not ranked:
        return []
    picks = [(ranked[-1][1], "best"), (ranked[len(ranked) // 2][1], "median"), (ranked[0][1], "worst")]
    chosen: list[tuple[str, str]] = []
    for file, tag in picks:
        if file not in (f for f, _ in chosen):
            chosen.append((file, tag))
    return chosen


def difference_map(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """0 where ``pred == truth`` or the truth is unlabelled (:data:`~lgeseg.png.IGNORE_INDEX`: no class is
    expected there), else the expected class index + 1 (uint8, same shape)."""
    wrong = (pred != truth) & (truth != IGNORE_INDEX)
    return np.where(wrong, truth.astype(np.int64) + 1, 0).astype(np.uint8)


def _discrete_scale(colors: list[str]) -> list[list[object]]:
    """A stepwise colorscale giving integer value ``i`` in ``0..len(colors)-1`` the colour ``colors[i]``."""
    n = len(colors)
    scale: list[list[object]] = []
    for i, color in enumerate(colors):
        scale += [[i / n, color], [(i + 1) / n, color]]
    return scale


def _representatives(record: StudyRecord) -> dict[float, TrialRecord]:
    """Per L2, the finished trial whose predictions are shown (lowest seed)."""
    return {l2: group[0] for l2, group in trials_by_l2(record).items()}


def figure2(record: StudyRecord) -> go.Figure:
    """Image | network mask per L2 | manual mask | difference per L2, for the selected test images."""
    title = "Figure 2. Test images: network masks per L2, manual mask and differences"
    chosen = select_images(record)
    if not chosen:
        return empty_figure(title, "No finished trial with per-image metrics yet.")
    if record.data_dir is None:
        return empty_figure(title, "The study does not record its data folder (data_dir).")
    networks = _representatives(record)
    try:
        ignore = read_ignore(record.data_dir, record.labels)
        rows = [_read_figure2_row(record.data_dir, file, networks, record.labels, ignore) for file, _ in chosen]
    except UserError as exc:
        return empty_figure(title, f"Cannot read the images: {exc}")
    fig, columns = _figure2_grid(chosen, list(networks))
    gray_values = _gray_values(record.labels, ignore)
    for r, ((file, _), row) in enumerate(zip(chosen, rows), start=1):
        _add_figure2_row(fig, r, file, row, networks, record.classes, gray_values, last_row=r == len(chosen))
    _figure2_layout(fig, title, networks, len(chosen), len(columns))
    return fig


def _figure2_grid(chosen: list[tuple[str, str]], l2s: list[float]) -> tuple[go.Figure, list[str]]:
    """The empty panel grid (one row per chosen image) and its column titles."""
    columns = (
        ["Image"]
        + [f"Network {l2_label(l2)}" for l2 in l2s]
        + ["Manual"]
        + [f"Difference {l2_label(l2)}" for l2 in l2s]
    )
    titles = []
    for r, (file, tag) in enumerate(chosen):
        titles += [f"{file} ({tag})"] + (columns[1:] if r == 0 else [""] * (len(columns) - 1))
    fig = make_subplots(
        rows=len(chosen), cols=len(columns), subplot_titles=titles, horizontal_spacing=0.01, vertical_spacing=0.06
    )
    return fig, columns


def _gray_values(labels: dict[str, int], ignore: int | None) -> np.ndarray:
    """Class index -> the dataset's pixel value; unlabelled manual pixels keep their own (ignore) value."""
    gray_values = np.zeros(IGNORE_INDEX + 1, dtype=np.uint8)
    gray_values[: len(labels)] = list(labels.values())
    gray_values[IGNORE_INDEX] = 0 if ignore is None else ignore
    return gray_values


def _add_figure2_row(
    fig: go.Figure,
    r: int,
    file: str,
    row: tuple[np.ndarray, dict[float, np.ndarray], np.ndarray],
    networks: dict[float, TrialRecord],
    classes: list[str],
    gray_values: np.ndarray,
    last_row: bool,
) -> None:
    """Row ``r`` (1-based) of Figure 2: the image, each L2's network mask, the manual mask, each difference."""
    image, preds, truth = row
    l2s = list(networks)
    fig.add_trace(
        go.Heatmap(
            z=image,
            colorscale="gray",
            zmin=0,
            zmax=1,
            showscale=False,
            meta={"file": file, "kind": "image"},
            hovertemplate="x %{x}, y %{y}: %{z:.3f}<extra>image</extra>",
        ),
        row=r,
        col=1,
    )
    masks = [(f"network {l2_label(l2)}", preds[l2]) for l2 in l2s] + [("manual", truth)]
    for c, (name, mask) in enumerate(masks, start=2):
        fig.add_trace(
            go.Heatmap(
                z=gray_values[mask],
                colorscale="gray",
                zmin=0,
                zmax=255,
                showscale=False,
                meta={"file": file, "kind": "mask", "source": name},
                hovertemplate=f"x %{{x}}, y %{{y}}: %{{z}}<extra>{name}</extra>",
            ),
            row=r,
            col=c,
        )
    diff_colors = ["#ffffff"] + [CLASS_PALETTE[i % len(CLASS_PALETTE)] for i in range(len(classes))]
    for c, l2 in enumerate(l2s, start=len(l2s) + 3):
        fig.add_trace(
            go.Heatmap(
                z=difference_map(preds[l2], truth),
                colorscale=_discrete_scale(diff_colors),
                zmin=-0.5,
                zmax=len(classes) + 0.5,
                showscale=last_row and l2 == l2s[-1],
                colorbar={
                    "title": {"text": "expected"},
                    "tickvals": list(range(len(classes) + 1)),
                    "ticktext": ["agree"] + classes,
                    "len": 0.5,
                    "outlinewidth": 1,
                },
                meta={"file": file, "kind": "difference", "l2": l2, "trial": networks[l2].number},
                hovertemplate=f"x %{{x}}, y %{{y}}: %{{z}}<extra>{l2_label(l2)}</extra>",
            ),
            row=r,
            col=c,
        )


def _figure2_layout(fig: go.Figure, title: str, networks: dict[float, TrialRecord], n_rows: int, n_cols: int) -> None:
    """Square panels without axes, the title naming how images and networks were chosen, the size."""
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed")
    for i in range(1, n_rows * n_cols + 1):
        suffix = "" if i == 1 else str(i)
        fig.layout[f"yaxis{suffix}"].scaleanchor = f"x{suffix}"
    seeds = ", ".join(f"{l2_label(l2)}: seed {t.seed}" for l2, t in networks.items())
    fig.update_layout(
        title=f"{title}<br><sup>best / median / worst by per-image MeanIoU averaged over L2; "
        f"masks of the lowest seed ({seeds})</sup>",
        height=60 + 190 * n_rows,
        template="plotly_white",
        font={"size": 10},
        margin={"t": 110, "l": 10, "r": 10},
    )
    fig.update_annotations(font_size=10)


def _read_figure2_row(
    data_dir: Path, file: str, networks: dict[float, TrialRecord], labels: dict[str, int], ignore: int | None = None
) -> tuple[np.ndarray, dict[float, np.ndarray], np.ndarray]:
    """Image, predicted class indices per L2 and manual class indices of one test file (unlabelled manual
    pixels, the dataset's ``ignore`` value, as :data:`~lgeseg.png.IGNORE_INDEX`)."""
    image = read_image(data_dir / "images" / file)
    truth = read_mask(data_dir / "masks" / file, labels, ignore)
    preds = {}
    for l2, trial in networks.items():
        path = trial.prediction_path(file)
        if path is None:
            raise UserError(f"trial #{trial.number} has no trial folder for its predictions")
        preds[l2] = read_mask(path, labels)
    return image, preds, truth
