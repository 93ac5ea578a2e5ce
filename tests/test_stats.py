"""offrl.stats against published t-table values and a Welch interval worked by hand; the
compare report's pairwise differences built from it."""

from __future__ import annotations

import math

import pytest

from offrl.compare_report import differences, seed_stats
from offrl.stats import betainc, t_cdf, t_quantile, welch_interval


@pytest.mark.parametrize("df,want", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764),
                                     (10, 2.2281), (30, 2.0423), (1000, 1.9623)])
def test_t_quantile_matches_the_t_table(df: float, want: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(want, abs=1e-4)
    assert t_quantile(0.025, df) == pytest.approx(-want, abs=1e-4)
    assert t_cdf(t_quantile(0.9, df), df) == pytest.approx(0.9, abs=1e-9)


def test_betainc_edges_and_a_closed_form() -> None:
    assert betainc(2.0, 3.0, 0.0) == 0.0 and betainc(2.0, 3.0, 1.0) == 1.0
    # I_x(1, b) = 1 - (1 - x)^b
    assert betainc(1.0, 3.0, 0.4) == pytest.approx(1 - 0.6 ** 3, rel=1e-12)
    assert t_cdf(0.0, 5.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="p must be in"):
        t_quantile(1.0, 3)


def test_welch_interval_by_hand() -> None:
    # means 2 and 6; squared standard errors 1/3 and 7/3; df = (8/3)^2 / ((1/3)^2/2 + (7/3)^2/2)
    w = welch_interval([1.0, 2.0, 3.0], [4.0, 5.0, 9.0])
    df = (8 / 3) ** 2 / ((1 / 3) ** 2 / 2 + (7 / 3) ** 2 / 2)
    half = t_quantile(0.975, df) * math.sqrt(8 / 3)
    assert w is not None and w["diff"] == -4.0 and w["df"] == pytest.approx(df)
    assert (w["low"], w["high"]) == pytest.approx((-4.0 - half, -4.0 + half))
    assert welch_interval([1.0], [2.0, 3.0]) is None  # one seed: no interval
    same = welch_interval([1.0, 1.0], [0.0, 0.0])
    assert same is not None and same["low"] == same["high"] == 1.0


def test_report_differences_cover_every_pair_in_order() -> None:
    agg = {algo: {"final_score": seed_stats(v), "last_score": seed_stats(v[:1])}
           for algo, v in (("dt", [1.0, 2.0, 3.0]), ("cql", [4.0, 5.0, 9.0]), ("bc", [2.0]))}
    pairs = differences(agg)
    assert [(p["a"], p["b"]) for p in pairs] == [("dt", "cql"), ("dt", "bc"), ("cql", "bc")]
    assert pairs[0]["final_score"] == welch_interval([1.0, 2.0, 3.0], [4.0, 5.0, 9.0])
    assert pairs[0]["last_score"] is None and pairs[1]["final_score"] is None


def test_suite_cell_reads_either_order_of_a_pair() -> None:
    from offrl.compare_report import _pair_cell

    w = welch_interval([10.0, 12.0, 14.0], [1.0, 2.0, 3.0])
    section = {"metric": "normalized_score",
               "differences": [{"a": "cql", "b": "dt", "final_score": w, "last_score": None}]}
    assert w is not None and w["low"] > 0
    assert _pair_cell(section, "cql", "dt", "final_score") == (
        f"+10.0 [{w['low']:+.1f}, {w['high']:+.1f}] *")
    assert _pair_cell(section, "dt", "cql", "final_score") == (
        f"-10.0 [{-w['high']:+.1f}, {-w['low']:+.1f}] *")
    assert _pair_cell(section, "dt", "cql", "last_score") == "-"
    assert _pair_cell(section, "dt", "bc", "final_score") == "-"
