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
