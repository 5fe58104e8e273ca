"""The claims table (cdln.pipeline.claims): measures, predicates, which claims apply to a grid, the
committed claims file, and the check catching a planted wrong change while passing the real code."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, run_experiment

import cdln.runner
from cdln.cli import main
from cdln.pipeline import aggregate, claims
from cdln.pipeline.claims import Claim, ClaimError, evaluate, load_claims, tables_read, violations
from cdln.pipeline.grid import Grid

CLAIMS_FILE = REPO / "config" / "claims.yaml"
PAPER = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
CI = yaml.safe_load((REPO / "config" / "ci.yaml").read_text())


def curves_row(panel, model, seed, iteration, seconds, error):
    return dict(panel=panel, model=model, seed=seed, iteration=iteration, seconds=seconds, recovery_error=error,
                train_loss=error / 10)  # fmt: skip


@pytest.fixture
def tables(tmp_path: Path) -> Path:
    """Hand-made tables of an experiment 'mf': seeds reach 1e-10 at known iterations."""
    rows = []
    for seed, (cdln_hit, original_hit) in enumerate([(300, 500), (400, 700)]):
        for iteration in range(0, 1001, 100):
            cdln_error = 1e-12 if iteration >= cdln_hit else 1.0
            original_error = 1e-11 if iteration >= original_hit else 1.0
            rows.append(curves_row("r10", "cdln", seed, iteration, iteration / 1000, cdln_error))
            rows.append(curves_row("r10", "original", seed, iteration, iteration / 100, original_error))
    pd.DataFrame(rows).to_csv(tmp_path / "mf_curves.csv", index=False)
    outcomes = [("cdln", 0, 1.0, 300, 0.3), ("cdln", 1, 2.0, 400, 0.4), ("original", 0, 1.0, 500, 5.0),
                ("original", 1, 1.0, 700, 7.0)]  # fmt: skip
    runs = [
        dict(panel="r10", model=m, seed=s, alpha=a, stop_iteration=i, stop_seconds=t, converged=True, device="cpu",
             device_name="cpu (1 threads)")
        for m, s, a, i, t in outcomes
    ]  # fmt: skip
    pd.DataFrame(runs).to_csv(tmp_path / "mf_runs.csv", index=False)
    (tmp_path / "incremental_findings.json").write_text(json.dumps({"mf": {"rank": 3, "n_learned": 3, "ok": True}}))
    return tmp_path


def claim(measure: str, holds: dict, **extra) -> Claim:
    return Claim(id="c", figure="fig_mf", claim="a claim", paper="p", measure=measure, holds=holds, **extra)


def measured(tables: Path, measure: str, **options) -> pd.Series:
    table = evaluate([claim(measure, {"above": 0})], "fig_mf", tables, **options)
    return table.iloc[0] if len(table) else None


def test_measures_read_the_tables(tables):
    assert measured(tables, "first(mf, r10, cdln, 1e-10)").measured == "350"  # mean of 300 and 400
    assert measured(tables, "first(mf, r10, cdln, 1e-10, over=max)").measured == "400"
    assert measured(tables, "first(mf, r10, original, 1e-10) / first(mf, r10, cdln, 1e-10)").measured == "1.71"
    assert measured(tables, "final(mf, r10, original)").measured == "1e-11"
    assert measured(tables, "runs(mf, r10, cdln, stop_iteration, alpha=max)").measured == "400"
    assert measured(tables, "finding(incremental, mf, n_learned) - finding(incremental, mf, rank)").measured == "0"
    assert measured(tables, "finding(incremental, mf, ok)").measured == "1"
    assert measured(tables, "max(1, 2) * -abs(-3)").measured == "-6"


def test_a_seed_that_never_gets_there_makes_the_measure_nan(tables):
    row = measured(tables, "first(mf, r10, cdln, 1e-20)")
    assert row.measured == "never / n/a" and not claim("0", {"above": 0}).check(math.nan)


def test_seconds_name_their_device_and_a_grid_without_timing_leaves_them_out(tables):
    row = measured(tables, "first(mf, r10, original, 1e-10, x=seconds) / first(mf, r10, cdln, 1e-10, x=seconds)")
    assert row.device == "cpu (1 threads)" and row.measured == "17.1"
    assert measured(tables, "first(mf, r10, cdln, 1e-10)").device == ""
    assert measured(tables, "runs(mf, r10, cdln, stop_seconds)", timing=False) is None
    assert measured(tables, "runs(mf, r10, cdln, stop_iteration)", timing=False) is not None


def test_seconds_name_the_engine_path_each_model_ran_on(tables):
    runs = pd.read_csv(tables / "mf_runs.csv")
    runs["engine_path"] = runs["model"].map({"cdln": "native-sampled", "original": "native-dense"})
    runs.to_csv(tables / "mf_runs.csv", index=False)
    row = measured(tables, "first(mf, r10, original, 1e-10, x=seconds) / first(mf, r10, cdln, 1e-10, x=seconds)")
    assert row.device == "cpu (1 threads) [native-dense], cpu (1 threads) [native-sampled]"


def test_panels_are_mapped_and_absolute_claims_left_out(tables):
    assert measured(tables, "first(mf, r7, cdln, 1e-10)", panels={"mf": {"r7": "r10"}}).measured == "350"
    assert measured(tables, "first(mf, r5, cdln, 1e-10)", panels={"mf": {"r7": "r10"}}) is None  # no counterpart
    absolute = claim("first(mf, r10, cdln, 1e-10)", {"below": 1000}, absolute=True)
    assert len(evaluate([absolute], "fig_mf", tables, absolute=False)) == 0
    assert len(evaluate([absolute], "fig_mf", tables, absolute=True)) == 1


@pytest.mark.parametrize(
    "holds,value,verdict",
    [({"above": 1}, 1.5, True), ({"above": 1}, 1, False), ({"at_least": 1}, 1, True), ({"below": 0.5}, 0.6, False),
     ({"at_most": 2}, 2, True), ({"between": [1, 2]}, 2, True), ({"between": [1, 2]}, 2.1, False),
     ({"equals": 1}, 1 + 1e-14, True), ({"equals": 0}, 1e-9, False)],
)  # fmt: skip
def test_predicates(holds, value, verdict):
    assert claim("1", holds).check(value) is verdict


def test_known_deviations_are_reported_but_not_violations(tables):
    rules = [claim("1", {"above": 2}), Claim(**{**claim("1", {"above": 2}).__dict__, "id": "d", "deviation": "why"})]
    table = evaluate(rules, "fig_mf", tables)
    assert list(table["holds"]) == [False, False]
    assert list(violations(table)["id"]) == ["c"]
    text = claims.to_markdown(table, "t")
    assert "0 of 2 claims hold; 1 do not and are known deviations" in text and "**no**" in text and "- *d*: why" in text


def test_malformed_claims_are_refused_by_name(tmp_path):
    good = {
        "id": "x",
        "figure": "fig_mf",
        "claim": "c",
        "paper": "p",
        "measure": "first(mf, r10, cdln, 1)",
        "holds": {"above": 1},
    }
    for change, message in [
        ({"holds": {"greater": 1}}, r"holds must be one of \['above'"),
        ({"measure": "spooky(mf)"}, r"unknown function 'spooky'"),
        ({"measure": "first(mf"}, r"does not parse"),
        ({"colour": "red"}, r"unknown keys \['colour'\]"),
        ({"id": "Bad Id"}, r"ids must be unique"),
    ]:  # fmt: skip
        path = tmp_path / "claims.yaml"
        path.write_text(yaml.safe_dump([{**good, **change}]))
        with pytest.raises(ClaimError, match=message):
            load_claims(path)
    path.write_text(yaml.safe_dump([{**good, "measure": "__import__('os')"}]))
    with pytest.raises(ClaimError, match="unknown function '__import__'"):
        load_claims(path)


def test_the_committed_claims_cover_every_figure():
    """At least one claim per figure, >= 20 that apply to the paper grid, and the reduced grid's panels
    all exist in its config (a rename there would silently drop claims otherwise)."""
    rules = load_claims(CLAIMS_FILE)
    figures = {rule.figure for rule in rules}
    expected = {f"fig_{name}" for name in (*Grid(PAPER).experiments, "scaling")}
    assert figures == expected
    assert len(rules) >= 20
    for experiment, mapping in CI["claims"]["panels"].items():
        assert set(mapping.values()) <= set(CI["experiments"][experiment]["panels"]), experiment
        assert set(mapping) <= set(PAPER["experiments"][experiment]["panels"]), experiment
    assert tables_read(rules, "fig_mf") == ["mf_curves.csv", "mf_runs.csv"]
    assert "incremental_findings.json" in tables_read(rules, "fig_incremental")


def ci_mc_claims(root: Path, monkeypatch) -> pd.DataFrame:
    """The reduced grid's mc jobs, run as the pipeline runs them, aggregated, and fig_mc's claims."""
    root.mkdir(parents=True)
    monkeypatch.chdir(root)
    config = {**CI, "experiments": {"mc": CI["experiments"]["mc"]}}
    curves, runs = aggregate.collect(run_experiment(config, "mc"), reach_error=None)
    (root / "tables").mkdir()
    curves.to_csv(root / "tables" / "mc_curves.csv", index=False)
    runs.to_csv(root / "tables" / "mc_runs.csv", index=False)
    out = root / "tables" / "claims" / "fig_mc.csv"
    panels = json.dumps(CI["claims"]["panels"])
    command = [
        "claims",
        "evaluate",
        "--claims",
        str(CLAIMS_FILE),
        "--figure",
        "fig_mc",
        "--tables",
        str(root / "tables"),
    ]
    assert main([*command, "--panels", panels, "--out", str(out)]) == 0
    return out


def test_the_check_passes_the_real_code_and_fails_a_planted_wrong_change(tmp_path, monkeypatch, capsys):
    """fig_mc's claims on the reduced grid hold with the real code; with the C-DLN initialised from
    random singular vectors instead of the surrogate's (a planted bug), 'the C-DLN needs fewer
    iterations' flips and the check fails, naming the claim."""
    real = ci_mc_claims(tmp_path / "real", monkeypatch)
    assert main(["claims", "check", "--table", str(real)]) == 0
    assert len(pd.read_csv(real)) >= 2

    real_compressed_dln = cdln.runner.compressed_dln

    def random_spectral_init(surrogate, r_hat, depth, eps, alpha=1.0, batch=1):
        import torch

        noise = torch.randn(surrogate.shape, generator=torch.Generator().manual_seed(7), dtype=surrogate.dtype)
        return real_compressed_dln(noise, r_hat, depth, eps, alpha, batch)

    monkeypatch.setattr(cdln.runner, "compressed_dln", random_spectral_init)
    planted = ci_mc_claims(tmp_path / "planted", monkeypatch)
    capsys.readouterr()
    assert main(["claims", "check", "--table", str(planted)]) == 1
    err = capsys.readouterr().err
    assert "CLAIMS: 1 of" in err and "mc-cdln-fewer-iterations" in err
