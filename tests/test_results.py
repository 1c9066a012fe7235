"""Similarity as a result users know (item/attribute access, pandas, repr), and the null's p-values."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from lintwin import Moments, similarity
from lintwin.cli import app
from lintwin.measures.null import NullResult, arrays_null

runner = CliRunner()


@pytest.fixture(scope="module")
def sim():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 6))
    b = a[:, :4] @ rng.standard_normal((4, 5)) + 0.3 * rng.standard_normal((400, 5))
    return similarity(Moments(6, 5, names=("inception", "resnet"), precision="float64", kernel=True).update(a, b))


def test_similarity_item_attribute_frame_and_repr(sim):
    assert sim["cka"] == sim.cka == sim.values["cka"]
    assert sim["shape_angle[0.5]"] == sim.values["shape_angle[0.5]"]
    assert set(sim.keys()) == set(sim.values) and "pwcca" in sim and list(sim) == list(sim.values)
    frame = sim.to_frame()
    assert frame.index.name == "measure" and frame.loc["cka", "value"] == sim.cka
    assert frame.attrs == {"networks": ["inception", "resnet"], "rows": 400}
    assert sim.to_dict()["values"] == sim.values and json.dumps(sim.to_dict())
    text = repr(sim)
    assert "\n" not in text and len(text) < 200 and text.startswith("Similarity(inception vs resnet, n=400, cka=")
    with pytest.raises(KeyError, match="'ckaa' is not a value of this Similarity"):
        sim["ckaa"]
    with pytest.raises(AttributeError, match="no attribute or value 'ckaa'"):
        sim.ckaa
    assert sim.names == ("inception", "resnet")  # fields come first; values never shadow them


def test_p_value_is_the_permutation_definition():
    res = NullResult(5, 0, samples={"cka": [0.1, 0.3, 0.5, 0.5, 0.2], "procrustes": [1.0, 1.2, 0.4, 1.1, 0.9]})
    s = res.summary({"cka": 0.5, "procrustes": 0.5})
    assert s["cka"]["as_alike"] == 2 and s["cka"]["p"] == pytest.approx(3 / 6)        # ties count
    assert s["procrustes"]["as_alike"] == 1 and s["procrustes"]["p"] == pytest.approx(2 / 6)  # a distance: ≤ counts
    assert s["cka"]["status"] == "few samples" and s["cka"]["z"] is None  # K = 5: no z from five samples


def test_degenerate_and_too_small_nulls_say_so_instead_of_a_z():
    flat = NullResult(30, 0, samples={"cca_rho1": [1.0 - 1e-16 * (i % 2) for i in range(30)],
                                      "cka": list(np.linspace(0.0, 0.01, 30))})
    s = flat.summary({"cca_rho1": 1.0, "cka": 0.9})
    assert s["cca_rho1"]["status"] == "degenerate" and s["cca_rho1"]["z"] is None and s["cca_rho1"]["p"] == 1.0
    assert s["cka"]["status"] == "ok" and s["cka"]["z"] > 100 and s["cka"]["p"] == pytest.approx(1 / 31)
    notes = flat.notes(s)
    assert len(notes) == 1 and "degenerate null" in notes[0] and "cca_rho1" in notes[0]
    few = NullResult(3, 0, samples={"cka": [0.1, 0.2, 0.15]})
    notes = few.notes(few.summary({"cka": 0.9}))
    assert "smallest p-value they can give is 1/(K+1) = 0.25" in notes[0] and "--null 19" in notes[0]


def test_null_p_values_on_real_streams_follow_the_pairing():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((300, 4))
    related = a[:, :3] + 0.5 * rng.standard_normal((300, 3))

    def cka(m):
        return {"cka": similarity(m, predictivity=False).values["cka"]}

    obs = cka(Moments(4, 3, precision="float64").update(a, related))
    s = arrays_null(a, related, cka, repeats=19, seed=1, kernel=False).summary(obs)["cka"]
    assert s["as_alike"] == 0 and s["p"] == pytest.approx(1 / 20) and s["status"] == "ok"


def test_similarity_cli_prints_p_values_and_formats(tmp_path):
    store = tmp_path / "s.zarr"
    r = runner.invoke(app, ["synth", str(store), "--train", "300", "--val", "0", "--dim-a", "6", "--dim-b", "5"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["similarity", str(store), "--a", "A", "--b", "B", "--null", "3", "-q"])
    assert r.exit_code == 0, r.output
    assert "p (K=3)" in r.stdout and " z" not in r.stdout.splitlines()[1]
    assert "Note: 3 null samples: the smallest p-value they can give is 1/(K+1) = 0.25" in r.stderr
    assert max(len(line) for line in r.stdout.splitlines()[1:-4]) <= 100
    r = runner.invoke(app, ["similarity", str(store), "--a", "A", "--b", "B", "--null", "2", "-q", "--format", "json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)  # stdout is the JSON alone
    assert data["null"]["summary"]["cka"]["p"] == pytest.approx(1 / 3)
    r = runner.invoke(app, ["similarity", str(store), "--a", "A", "--b", "B", "-q", "--format", "markdown"])
    assert r.exit_code == 0 and r.stdout.startswith("| measure | value |")
