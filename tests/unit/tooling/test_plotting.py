"""Figures the chapters draw: what the reader must be able to read off them."""

from backdoor_utils.tooling import plotting


def test_rates_with_psnr_spreads_a_wide_sweep_on_a_log_axis_and_keeps_the_legend_off_the_curves():
    alphas = [0.01, 0.02, 0.05, 0.1, 0.2]
    fig = plotting.rates_with_psnr(
        alphas,
        {"ASR": [0.0, 0.94, 1.0, 1.0, 1.0], "clean accuracy": [0.99] * 5},
        [45.2, 39.2, 31.3, 25.2, 19.2],
        "blend weight alpha",
        "sweep",
    )
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "0.01",
        "0.02",
        "0.05",
        "0.1",
        "0.2",
    ]
    assert ax.get_legend() is None and fig.axes[1].get_legend() is None
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "ASR",
        "clean accuracy",
        "median PSNR (dB)",
    ]
    fig.canvas.draw()
    box, plot = legend.get_window_extent(), ax.get_window_extent()
    assert box.y1 <= plot.y0  # below the plotting area, not on it
    narrow = plotting.rates_with_psnr(
        [0.1, 0.2, 0.3], {"ASR": [0.5, 0.9, 1.0]}, [30, 25, 22], "x", "t"
    )
    assert narrow.axes[0].get_xscale() == "linear"


def test_ratio_bars_clip_huge_ratios_write_their_value_and_colour_the_cleansed():
    labels = list(range(10))
    ratios = [1.0] * 10
    ratios[0], ratios[3] = 1e304, 1.3
    cleansed = [c == 0 for c in labels]
    fig = plotting.ratio_bars({"run": (labels, ratios, cleansed)}, 3, 2.0, "t")
    ax = fig.axes[0]
    heights = [bar.get_height() for bar in ax.patches]
    assert heights[0] == 10.0 and abs(heights[3] - 0.1139) < 1e-3  # clipped; log10
    assert [t.get_text() for t in ax.texts] == ["1e304", "1.3"]  # clipped; target
    red = [bar.get_facecolor() for bar in ax.patches]
    assert red[0] != red[1] and len({red[i] for i in range(1, 10)}) == 1
    assert ax.get_xticklabels()[3].get_text() == "3\ntarget"
    (line,) = ax.get_lines()
    assert abs(line.get_ydata()[0] - 0.30103) < 1e-4  # log10 of the threshold
