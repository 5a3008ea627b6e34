"""Loss-curve figure written beside ``history.csv`` after every epoch."""

from __future__ import annotations

from pathlib import Path

from smil.io_utils import atomic_path


def plot_loss_curves(history: list[dict[str, float]], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_px) = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    for key in sorted({k for row in history for k in row}):
        if key.startswith("train/") or key == "val/loss":
            ys = [row.get(key) for row in history]
            pts = [(e, y) for e, y in zip(epochs, ys) if y is not None and y == y]
            if pts and any(y > 0 for _, y in pts):
                ax_loss.plot(*zip(*pts), marker="o", ms=3, label=key)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend(fontsize=7)
    pts = [(e, row["val/keypoints2d_px"]) for e, row in zip(epochs, history) if "val/keypoints2d_px" in row]
    if pts:
        ax_px.plot(*zip(*pts), marker="o", ms=3, color="C3")
    ax_px.set_xlabel("epoch")
    ax_px.set_ylabel("val 2D keypoint error (px)")
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
