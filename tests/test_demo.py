"""``tensorguard demo``: its claims hold end to end (real files, real fingerprints, saved clusters)."""

from __future__ import annotations

from tensorguard import clustering
from tensorguard.app import demo


def test_demo_claims_hold(tmp_path):
    messages: list[str] = []
    result = demo.run_demo(tmp_path / "imgs", log=messages.append)
    families = {m.name: m.family for m in result.models}
    # every derivative clusters with its base, and only with it
    for c in result.synthetic.model.clusters_:
        assert {families[m] for m in c.members} == {c.name.removesuffix("-base")}
        assert c.centers == (c.name,)
    verdicts = {p.model: p for p in result.predictions}
    assert {p.rule for p in result.predictions} == {clustering.Rule.NEIGHBORS}  # the default rule
    assert verdicts[demo.HELD_OUT].verdict == "alpha-base" and verdicts[demo.HELD_OUT].confidence == 1
    assert {n.base for n in verdicts[demo.HELD_OUT].neighbors} == {"alpha-base"}
    assert verdicts[demo.STRANGER].verdict == clustering.UNKNOWN
    assert verdicts[demo.STRANGER].distance > 2 * verdicts[demo.STRANGER].threshold
    assert result.bundled.evaluation.correct == 40 and result.bundled.evaluation.evaluated == 43
    assert [(s.rule, s.right, s.evaluated) for s in result.rules] == [
        ("neighbors", 35, 35), ("paper", 32, 35), ("centroid", 34, 35)]
    assert [p.name for p in result.plots] == [
        "synthetic_clusters.png", f"unknown_model_prediction_{demo.HELD_OUT}.png",
        f"unknown_model_prediction_{demo.STRANGER}.png", "bundled_clusters.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in result.plots)
    assert len(messages) == 5 and "safetensors" in messages[0] and "rule neighbors" in messages[2]
    text = demo.render_text(result)
    assert f"{demo.STRANGER}: unknown" in text and "40/43" in text and str(result.plots[0]) in text
    assert "rule neighbors 35/35, rule paper 32/35, rule centroid 34/35" in text


def test_cli_demo_reruns_over_its_own_figures(run_cli, tmp_path):
    for _ in range(2):
        r = run_cli("demo", "--imgs", tmp_path, "--samples", "3")
        assert r.code == 0, r.err
    assert "Pictures:" in r.out and str(tmp_path / "bundled_clusters.png") in r.out


def test_cli_demo_writes_nothing_unless_asked(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run_cli("demo", "--samples", "3")
    assert r.code == 0, r.err
    assert list(tmp_path.iterdir()) == [] and "Pictures:" not in r.out and "--plot DIR" in r.out
