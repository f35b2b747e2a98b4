"""scripts/display_cut.py: the most confident box shown only above a score cut, from a report's
kept detections, in expert-seconds."""

from dataclasses import replace

import pytest

from model import datasets
from model.evaluation.evaluate import evaluate
from model.evaluation.report import write_report
from model.records import Box, Detection
from tests.scripts import load_script


@pytest.fixture(scope="module")
def display_cut():
    return load_script("display_cut")


def test_hiding_a_doubtful_box_that_misses_saves_its_delete(display_cut, tmp_path, busbra_dir, capsys):
    first, second = datasets.load(f"busbra:{busbra_dir}")[:2]
    right = replace(first.boxes[0], score=0.9)                       # on the lesion, right category
    elsewhere = Box(0, 0, 5, 5, second.boxes[0].category, 0.2)       # a doubtful box off the lesion
    detections = [Detection((right,), first.width, first.height),
                  Detection((elsewhere,), second.width, second.height)]
    report = write_report(evaluate([first, second], detections, ["2", "3", "4", "5"], decision="top"),
                          tmp_path / "report", "m", "busbra")
    data = display_cut.read(report)
    by_cut = display_cut.ratios(*data)
    # shown: verify both (1.6 s each), delete the miss (2.9 s), draw its lesion (7 s); by hand 2 x 7 s
    assert by_cut[0.05] == pytest.approx((1.6 + 1.6 + 2.9 + 7) / 14)
    assert by_cut[0.3] == pytest.approx((1.6 + 7) / 14)              # the miss hidden, drawn instead
    assert by_cut[0.8] == pytest.approx((1.6 + 7) / 14) and by_cut[0.7] == by_cut[0.3]
    assert display_cut.fitted_cut(by_cut) == 0.3                      # a tie keeps the lowest cut
    assert display_cut.oracle_ratio(*data) == by_cut[0.3]            # exactly the miss hidden

    assert display_cut.main(["--fit", str(report), "--score", str(report)]) == 0
    out = capsys.readouterr().out
    assert '"cut": 0.3' in out and "every category right" in out


def test_top1_onlys_seconds_split_by_action_add_up_to_its_ratio(display_cut, tmp_path, busbra_dir):
    first, second = datasets.load(f"busbra:{busbra_dir}")[:2]
    other = next(c for c in ("2", "3", "4", "5") if c != first.boxes[0].category)
    relabelled = replace(first.boxes[0], category=other, score=0.9)  # on the lesion, wrong category
    elsewhere = Box(0, 0, 5, 5, second.boxes[0].category, 0.8)       # off the lesion, right category
    detections = [Detection((relabelled,), first.width, first.height),
                  Detection((elsewhere,), second.width, second.height)]
    report = write_report(evaluate([first, second], detections, ["2", "3", "4", "5"], decision="top"),
                          tmp_path / "report", "m", "busbra")
    actions = display_cut.by_action(*display_cut.read(report))
    # per image: both verified (1.6 s each), one relabel (2.9 s), one delete (2.9 s) and draw (7 s)
    assert actions["verify"] == pytest.approx(1.6) and actions["relabel"] == pytest.approx(2.9 / 2)
    assert actions["delete"] == pytest.approx(2.9 / 2) and actions["draw"] == pytest.approx(7 / 2)
    assert actions["adjust"] == 0 and actions["by_hand"] == pytest.approx(7)
    assert actions["ratio"] == pytest.approx(display_cut.ratios(*display_cut.read(report))[0.05])
    assert actions["ratio_categories_right"] == pytest.approx((1.6 + 2.9 / 2 + 7 / 2) / 7)


def test_a_cut_on_the_rank_reads_what_chose_the_top_box_not_its_score(display_cut, tmp_path, busbra_dir, capsys):
    """Item 84: where the box classifier re-ranks, the cut can read the rank value instead."""
    first, second = datasets.load(f"busbra:{busbra_dir}")[:2]
    right = replace(first.boxes[0], score=0.3)                       # on the lesion: low score, high rank
    elsewhere = Box(0, 0, 5, 5, second.boxes[0].category, 0.9)       # off the lesion: high score, low rank
    detections = [Detection((right,), first.width, first.height, ranks=(0.9,)),
                  Detection((elsewhere,), second.width, second.height, ranks=(0.2,))]
    report = write_report(evaluate([first, second], detections, ["2", "3", "4", "5"], decision="top"),
                          tmp_path / "report", "m", "busbra")
    data = display_cut.read(report)
    # by score at 0.5: the right box hidden (drawn, 7 s), the miss shown (verify, delete, draw)
    assert display_cut.ratios(*data, [0.5])[0.5] == pytest.approx((7 + 1.6 + 2.9 + 7) / 14)
    # by rank at 0.5: the right box shown and verified, the miss hidden and its lesion drawn
    assert display_cut.ratios(*data, [0.5], by="rank")[0.5] == pytest.approx((1.6 + 7) / 14)
    assert display_cut.main(["--fit", str(report), "--score", str(report), "--by", "rank", "--cuts", "0.5"]) == 0
    out = capsys.readouterr().out
    assert '"by": "rank", "cut": 0.5' in out and ">= 0.05" in out  # top1-only as served is always a column
