"""``benchmarks.goals.inference_goals`` (issue #21, section 5): ratios to torchvision in the same run, met only
when batch 1 and batch 8 both meet them, "not measured" when a row is missing (never met by default)."""
from __future__ import annotations

from benchmarks.goals import inference_goals


def _t(ms: float) -> dict:
    return {"median_s": ms / 1e3}


def _doc(ours: dict[str, float], tv: float = 300.0, post: tuple[float, float] | None = (10.0, 90.0)) -> dict:
    e2e = {case: {"timings": {"torchvision": _t(tv), **{k: _t(v) for k, v in ours.items()}}}
           for case in ("B=1", "B=8")}
    res = {"end_to_end": e2e}
    if post is not None:
        res["postprocess_B8"] = {"score_threshold=0.5": {"ours": _t(post[0]), "torchvision": _t(post[1])}}
    return {"results": res}


def test_ratios_against_the_same_run() -> None:
    goals = {g.name: g for g in inference_goals(_doc({"torch": 240.0, "onnxruntime": 150.0,
                                                      "onnxruntime-int8": 130.0}))}
    assert goals["inference torch"].met is True and "1.25x" in goals["inference torch"].measured  # 300 / 240
    assert goals["inference onnxruntime"].met is True  # 2.0x >= 1.5x
    assert goals["inference onnxruntime-int8"].met is False and goals["inference onnxruntime-int8"].verdict == "MISSED"
    post = goals["inference post-processing"]
    assert post.met is True and "9.0x" in post.measured  # 90 / 10 >= 8


def test_missing_rows_are_not_measured() -> None:
    goals = {g.name: g for g in inference_goals(_doc({"torch": 100.0}, post=None))}
    assert goals["inference torch"].met is True
    for name in ("inference onnxruntime", "inference onnxruntime-int8", "inference post-processing"):
        assert goals[name].met is None and goals[name].verdict == "not measured"
    one_batch = _doc({"onnxruntime": 100.0})
    del one_batch["results"]["end_to_end"]["B=1"]
    assert {g.name: g.met for g in inference_goals(one_batch)}["inference onnxruntime"] is None
    assert all(g.met is None for g in inference_goals(None))


def test_every_threshold_must_meet_the_post_processing_goal() -> None:
    doc = _doc({}, post=(10.0, 90.0))
    doc["results"]["postprocess_B8"]["score_threshold=0.01"] = {"ours": _t(50.0), "torchvision": _t(100.0)}
    post = {g.name: g for g in inference_goals(doc)}["inference post-processing"]
    assert post.met is False and "2.0x" in post.measured and "9.0x" in post.measured
