"""scripts/table_iii_paper.py: Table III the paper's way re-read on a kept run, no model run."""

import gzip
import json
from dataclasses import replace

from model import datasets
from model.evaluation.evaluate import evaluate
from model.evaluation.report import write_report
from model.records import Detection
from tests.scripts import load_script


def test_a_kept_run_is_read_the_papers_way_beside_the_split_as_run(tmp_path, breast_dir, capsys):
    breast = datasets.load(f"breast:{breast_dir}")
    runs = tmp_path / "item" / "runs"
    # the second model: P(5) 0.9 on the experts' 4B/4C lesions, 0.05 elsewhere; its detections gzipped
    seconds = [Detection(tuple(replace(b, score=0.9) for b in r.boxes), r.width, r.height,
                         class_scores=tuple({"2": 1 - q, "3": 0.0, "5": q} for b in r.boxes
                                            for q in [0.9 if b.category in ("4B", "4C") else 0.05]))
               for r in breast]
    write_report(evaluate(breast, seconds, ["2", "3", "5"]), runs / "model-no4-breast", "m", "data")
    kept = runs / "model-no4-breast" / "detections.jsonl"
    (kept.parent / "detections.jsonl.gz").write_bytes(gzip.compress(kept.read_bytes()))
    kept.unlink()
    (runs / "subcategory_cuts.json").write_text(json.dumps({"cuts": [0.1, 0.5]}))
    split = [Detection(tuple(replace(b, score=0.9, category="4A") for b in r.boxes), r.width, r.height)
             for r in breast]
    write_report(evaluate(breast, split, ["2", "3", "4", "4A", "4B", "4C", "5"], decision="top"),
                 runs / "split-breast", "m", "data")
    assert load_script("table_iii_paper").main(["--pictures", str(tmp_path / "pictures"), str(runs)]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])[str(runs)]
    fours = [b.category for r in breast for b in r.boxes if b.category in ("4A", "4B", "4C")]
    paper = result["paper's way"]["4A_vs_4B"]
    assert (paper["tp"], paper["fn"], paper["fp"], paper["tn"]) == (
        sum(c != "4A" for c in fours), 0, 0, fours.count("4A"))
    assert result["as run"]["4A_vs_4B"]["sensitivity"] == 0.0  # every lesion called 4A as run
    assert (tmp_path / "pictures" / "item.png").stat().st_size > 1000
