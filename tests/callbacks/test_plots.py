"""The minority-collapse figure: panels, group borders and the values it draws."""

from __future__ import annotations

import numpy as np
import torch

from lt_lightning.callbacks import plots


def test_minority_collapse_figure_orders_classes_by_group_and_draws_cosines():
    k = 6
    etf = torch.eye(k, dtype=torch.float64) - 1.0 / k
    w = etf.clone()
    w[4:] = w[4]  # the two few-shot rows collapsed
    groups = [2, 0, 0, 1, 2, 2]  # deliberately unsorted: the figure sorts many -> few
    fig = plots.minority_collapse_figure(w, etf, groups, "t")
    axes = fig.axes
    assert len(axes) == 4  # two heatmaps, the norm panel and the colour bar
    shown = axes[0].images[0].get_array()
    order = np.argsort(groups, kind="stable")
    wn = w.numpy()[order]
    wn = wn / np.linalg.norm(wn, axis=1, keepdims=True)
    np.testing.assert_allclose(shown, wn @ wn.T)
    # borders between the groups: after the 2 many and the 1 medium class
    horizontal = [line.get_ydata() for line in axes[0].lines if line.get_ydata()[0] == line.get_ydata()[1]]
    assert sorted(float(y[0]) for y in horizontal) == [1.5, 2.5]
    assert fig._suptitle.get_text() == "t minority collapse"
    assert plots.figure_to_array(fig).shape[2] == 3
