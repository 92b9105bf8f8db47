"""The issue-14 study drivers in examples/: the step plan of fmnist_dmat_study.py (dependencies, resumable
markers, the same commands a rerun would issue) and its claim verdicts and tables on hand-written results."""

import argparse
import importlib.util
import json
import sys

import pytest

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from _paths import SOURCE_ROOT  # noqa: E402


def _load(name):
    sys.path.insert(0, str(SOURCE_ROOT / "examples"))  # the scripts share examples/_results_doc.py
    spec = importlib.util.spec_from_file_location(name, SOURCE_ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def study():
    return _load("fmnist_dmat_study")


def test_plan_orders_dependencies_and_shares_the_real_images(study, tmp_path):
    a = study.parse_args(["--out", str(tmp_path), "--seeds", "0", "1", "--curve", "2500"])
    steps = study.plan(a, tmp_path)
    names = [s.name for s in steps]
    # the cond set and the labeller, 3 more sets, 5 rows x 2 seeds, 2 curve runs
    assert len(names) == len(set(names)) == 2 + 3 + 5 * 2 + 2
    assert names[-2:] == ["trades-cond2500-seed0", "trades-cond2500-seed1"]  # the curve comes last
    curve = steps[-1].args
    assert curve[curve.index("--synthetic-subset") + 1] == "2500" and steps[-1].needs == ["gen-cond"]
    for i, s in enumerate(steps):  # a single worker never meets a step whose dependency comes later
        assert all(n in names[:i] for n in s.needs), s.name
    by = {s.name: s for s in steps}
    # the contrastive set is guided by the adversarially trained real-only model of the first seed (the paper's
    # frozen robust encoder) and uses the conditional set's seed and sampler, so only the guidance differs
    gc, gcond = by["gen-contrastive"].args, by["gen-cond"].args
    assert gc[gc.index("--contrastive-encoder") + 1] == str(tmp_path / "trades-real-seed0")
    same_folder = [str(tmp_path / "gen-cond") if x == str(tmp_path / "gen-contrastive") else x for x in gc]
    assert same_folder[:len(gcond)] == gcond and len(gc) > len(gcond)
    assert "--unconditional" in by["gen-uncond"].args and by["gen-uncond"].needs == ["labeler"]
    # the filtered set: the cond command (same seeds, so the same images) plus the labeller's confidence filter
    gf = by["gen-filtered"].args
    assert [str(tmp_path / "gen-cond") if x == str(tmp_path / "gen-filtered") else x for x in gf][:len(gcond)] == gcond
    assert gf[len(gcond):] == ["--filter-classifier", str(tmp_path / "labeler"), "--keep-fraction", "0.5"]
    assert by["gen-filtered"].needs == ["labeler"] and by["trades-filtered-seed1"].needs == ["gen-filtered"]
    assert study.row_images(a, "filtered") == 5000
    for bad in ("0", "1.5", "nan"):
        with pytest.raises(SystemExit):
            study.parse_args(["--keep-fraction", bad])
    # every TRADES row trains on the same real subset with the same budget; only the generated set differs
    runs = [s for s in steps if s.name.startswith("trades-")]
    strip = []
    for s in runs:
        args = list(s.args)
        if "--synthetic-data" in args:
            i = args.index("--synthetic-data")
            del args[i:i + 4]
        if "--synthetic-subset" in args:
            i = args.index("--synthetic-subset")
            del args[i:i + 2]
        i = args.index("--out-dir")
        del args[i:i + 2]
        i = args.index("--seed")
        del args[i:i + 2]
        strip.append(tuple(args))
    assert len(set(strip)) == 1
    assert all(s.done.name == "results.json" for s in runs)


def _fake_run(folder, seed, clean, aa):
    folder.mkdir(parents=True)
    folder.joinpath("results.json").write_text(json.dumps({
        "clean_accuracy": clean, "train_seconds": 10.0, "config": {"seed": seed},
        "adversarial": {"pgd": {"robust_accuracy": aa + 0.05}, "autoattack": {"robust_accuracy": aa}}}))


def test_verdicts_need_every_seed_and_two_standard_errors(study):
    assert study.verdict([0.02, 0.03, 0.025]) == "held"
    assert study.verdict([-0.02, -0.03, -0.025]) == "opposite"
    assert study.verdict([0.05, -0.01, 0.02]) == "within noise"  # one seed disagrees
    assert study.verdict([0.01, 0.05, 0.0001]) == "within noise"  # mean 0.02, se 0.0143: under 2 se
    assert study.verdict([0.02]) == "one seed only"


def test_table_reports_paired_differences(study, tmp_path):
    a = study.parse_args(["--out", str(tmp_path), "--seeds", "0", "1", "2", "--figure", str(tmp_path / "f.png")])
    aa = {"cond2500": [0.42, 0.43, 0.44], "real": [0.40, 0.42, 0.41], "cond": [0.44, 0.45, 0.46],
          "uncond": [0.43, 0.47, 0.40], "contrastive": [0.44, 0.45, 0.46], "cond5000": [0.43, 0.44, 0.45],
          "filtered": [0.45, 0.47, 0.46]}
    for row, vals in aa.items():
        for seed, v in enumerate(vals):
            _fake_run(tmp_path / study.trades_name(row, seed), seed, 0.80, v)
    block, summary = study.make_block(a, tmp_path, "cmd")
    claims = {(c["new"], c["old"]): c for c in summary["claims"]}
    assert claims[("cond", "real")]["diff_aa"] == pytest.approx([0.04, 0.03, 0.05])
    assert claims[("cond", "real")]["verdict"] == "held"
    assert claims[("cond", "uncond")]["verdict"] == "within noise"
    assert claims[("contrastive", "cond")]["diff_aa"] == pytest.approx([0, 0, 0])
    # the filter is judged against the same number of unfiltered images, not against the full set
    assert claims[("filtered", "cond5000")]["diff_aa"] == pytest.approx([0.02, 0.03, 0.01])
    assert "| filtered | 5,000 | 3 |" in block
    assert "| cond | 10,000 | 3 | 80.00 ± 0.00 | 50.00 ± 1.00 | 45.00 ± 1.00 |" in block
    assert "| DM-Improves-AT | generated data improve adversarial training | cond − real | 4.00 ± 1.00 |" in block
    assert "| cond2500 | 2,500 | 3 |" in block
    study.make_figure(a, tmp_path, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 10_000


def _robaug_imports(path):
    import ast

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "robaug":
            for alias in node.names:
                yield node.module, alias.name


@pytest.mark.parametrize("path", sorted((SOURCE_ROOT / "examples").glob("*.py")), ids=lambda p: p.name)
def test_every_robaug_name_the_examples_import_exists(path):
    # the examples import lazily inside functions, so a moved module only fails hours into a study: check them all
    import importlib

    missing = []
    for module, name in _robaug_imports(path):
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            missing.append(f"{module} ({e})")
            continue
        if not hasattr(mod, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"{module}.{name}")
    assert not missing, f"{path.name} imports names that do not exist: {missing}"


def test_claims_pair_seeds_and_respect_the_claimed_direction(tmp_path):
    claims = _load("fmnist_claims")
    assert claims.verdict([-0.02, -0.03, -0.025], sign=-1) == "held"  # a lower error is the claimed direction
    assert claims.verdict([-0.02, -0.03, -0.025], sign=+1) == "opposite"
    table = tmp_path / "table"
    for recipe, accs in {"baseline": [0.70, 0.72, 0.71], "ipmix": [0.85, 0.86, 0.88]}.items():
        for seed, acc in enumerate(accs):
            (table / f"{recipe}-seed{seed}").mkdir(parents=True)
            (table / f"{recipe}-seed{seed}" / "results.json").write_text(json.dumps({"corruption_accuracy": acc}))
    diffs = claims.paired(table, "ipmix", "baseline", claims.results("corruption_accuracy"), [0, 1, 2, 3])
    assert diffs == pytest.approx([0.15, 0.14, 0.17])  # seed 3 is missing in both: left out, not zero
    a = argparse.Namespace(table=str(table), dmat=str(tmp_path / "dmat"), seeds=[0, 1, 2])
    block, out = claims.make_block(a)
    assert "| IPMix | raises corruption accuracy | -C accuracy | ipmix − baseline | +15.33 ± 1.53 | 3 | held |" in block
    assert {o["verdict"] for o in out if o["paper"] == "DM-Improves-AT"} == {"not measured"}


def test_replace_block_keeps_the_page_around_the_markers(tmp_path):
    doc_mod = _load("_results_doc")
    doc = tmp_path / "results.md"
    doc.write_text("intro\n<!-- t:begin -->\nold\n<!-- t:end -->\noutro\n")
    doc_mod.replace_block(doc, "t", "new\n")
    assert doc.read_text() == "intro\n<!-- t:begin -->\nnew\n<!-- t:end -->\noutro\n"
    doc_mod.replace_block(doc, "u", "second")  # missing markers: appended
    assert doc.read_text().endswith("outro\n\n<!-- u:begin -->\nsecond\n<!-- u:end -->\n")
    assert doc_mod.mean_sd([0.5, 0.7]) == "60.00 ± 14.14" and doc_mod.mean_sd([]) == "n/a"
