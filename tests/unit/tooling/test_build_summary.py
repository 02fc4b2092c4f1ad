"""The build summary (tooling.build_summary): each chapter's time split by what ran in it."""

import datetime as dt

from backdoor_utils.tooling import build_summary
from backdoor_utils.tooling.build_summary import Chapter, read_log, report, summarise

T0 = dt.datetime(2026, 12, 6, 12, 0, 0)


def _line(at: int, seconds: float, entry: str, what: str) -> str:
    when = (T0 + dt.timedelta(seconds=at)).strftime("%Y-%m-%d %H:%M:%S")
    return f"{when}\t{seconds:.1f} s\t{entry}/abc\t{what}\n"


def _log(tmp_path):
    path = tmp_path / "computed.log"
    path.write_text(
        _line(-500, 40.0, "models", "attack patch seed 0 epochs 5")  # an earlier build
        + _line(100, 60.0, "models", "attack patch poison_rate 0.01 seed 0 epochs 5")
        + _line(102, 2.0, "attack_metrics", "attack_metrics patch seed 0 epochs 5")
        + _line(150, 20.0, "models", "data epochs 2")  # a reclassifier, inside the cell
        + _line(160, 50.0, "matrix_cells", "matrix_cell patch activation_clustering")
        + _line(400, 30.0, "models", "attack none n_train 1000 seed 0 epochs 2")
        + "a line of another shape\n"
    )
    return path


def test_entries_nested_in_another_count_once_in_their_own_kind(tmp_path):
    entries = read_log(_log(tmp_path), T0.timestamp())
    assert len(entries) == 5  # the earlier build's line and the odd line left out
    cell = next(e for e in entries if e.kind == "matrix_cells")
    reclassifier = next(e for e in entries if e.what == "data epochs 2")
    assert cell.own == 30.0 and reclassifier.own == 20.0


def test_a_chapters_time_is_split_by_the_entries_that_ran_inside_it(tmp_path):
    entries = read_log(_log(tmp_path), T0.timestamp())
    first = Chapter("01_first", T0.timestamp() + 200, 200.0)  # 0 .. 200 s
    second = Chapter("02_second", T0.timestamp() + 500, 250.0)  # 250 .. 500 s
    cached = Chapter("03_cached", None, None)
    summary = summarise([first, second, cached], entries)
    one, two, three = summary["chapters"]
    assert one["computed"] == 4 and two["computed"] == 1 and three["computed"] == 0
    # 60 + 20 s training, 30 s of the cell's own time in defenses, the rest other
    assert one["shares"] == {"training": 80.0, "defenses": 30.0, "other": 90.0}
    assert two["shares"] == {"training": 30.0, "defenses": 0.0, "other": 220.0}
    # two models from scratch: 5 x 54,000 and 2 x 1,000 images
    assert summary["full_models"] == 2 and summary["images_trained"] == 272_000
    text = report(summary, None)
    assert "03_cached" in text and "not executed" in text
    assert "cache entries computed in this build: 5" in text


def test_a_build_that_computed_nothing_says_so(tmp_path, monkeypatch):
    (tmp_path / "computed.log").write_text(_line(-10, 40.0, "models", "attack none"))
    monkeypatch.setattr(build_summary.cache, "ARTIFACTS", tmp_path)
    monkeypatch.setattr(
        build_summary,
        "read_chapters",
        lambda build, since: [Chapter("01_first", T0.timestamp() + 60, 60.0)],
    )
    summary = build_summary.main(["--since", str(T0.timestamp())])
    assert summary["entries_computed"] == 0 and summary["floor"] is None
    assert summary["chapters"][0]["shares"]["other"] == 60.0
