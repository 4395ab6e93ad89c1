import json
from pathlib import Path

import pytest

from gradspace import pairs as pairs_module
from gradspace.data.blimp_paradigms import BLIMP_PARADIGMS
from gradspace.data.suite import TaskSuite, blimp_paradigms_for, read_pairs_dir, split_pairs
from gradspace.errors import GradspaceError
from gradspace.pairs import MinimalPair, read_pairs_jsonl, write_pairs_jsonl

pytestmark = pytest.mark.unit

BLIMP_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "blimp"
needs_blimp = pytest.mark.skipif(not BLIMP_DIR.is_dir(), reason="real BLiMP data not beside the repo")


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_user_jsonl_needs_only_the_two_sentences(tmp_path):
    path = write_lines(tmp_path / "mine.jsonl", [json.dumps({"sentence_good": "a b", "sentence_bad": "b a"})])
    [pair] = read_pairs_jsonl(path)
    assert pair == MinimalPair("a b", "b a", task="mine", phenomenon="mine", id="0")


def test_malformed_line_reports_file_and_line(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", [json.dumps({"sentence_good": "a", "sentence_bad": "b"}), "{not json"])
    with pytest.raises(GradspaceError, match=r"bad\.jsonl:2: not valid JSON"):
        read_pairs_jsonl(path)


@pytest.mark.parametrize("record", [{"sentence_good": "a"}, {"sentence_good": "a", "sentence_bad": ""}, ["a", "b"]])
def test_missing_fields_are_named(tmp_path, record):
    path = write_lines(tmp_path / "x.jsonl", [json.dumps(record)])
    with pytest.raises(GradspaceError, match=r"x\.jsonl:1: (missing or empty field\(s\) sentence_bad|expected a JSON object)"):
        read_pairs_jsonl(path)


def test_empty_file_and_empty_directory_are_errors(tmp_path):
    with pytest.raises(GradspaceError, match="no minimal pairs"):
        read_pairs_jsonl(write_lines(tmp_path / "empty.jsonl", [""]))
    (tmp_path / "nothing").mkdir()
    with pytest.raises(GradspaceError, match="no .jsonl files"):
        read_pairs_dir(tmp_path / "nothing")


def test_non_utf8_file_names_the_line_and_byte(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"sentence_good": "a b", "sentence_bad": "b a"}\n{"sentence_good": "caf\xe9 b", "sentence_bad": "b a"}\n')
    with pytest.raises(GradspaceError, match=r"^.*latin1\.jsonl:2: not UTF-8 text \(byte 0xe9 at column 23\); save the file as UTF-8$"):
        read_pairs_jsonl(path)


@pytest.fixture
def unreported(monkeypatch):
    """Identical pairs are reported once per process: these tests need files no earlier test has read."""
    monkeypatch.setattr(pairs_module, "_REPORTED_IDENTICAL", set())


def test_pairs_with_identical_sentences_are_left_out_with_their_lines(tmp_path, capsys, unreported):
    rows = [("a b", "b a"), ("c d", "c d"), ("e f", "f e"), ("g h ", " g h")]
    path = write_lines(tmp_path / "x.jsonl", [json.dumps({"sentence_good": g, "sentence_bad": b}) for g, b in rows])
    pairs = read_pairs_jsonl(path)
    assert [(pair.good, pair.bad) for pair in pairs] == [("a b", "b a"), ("e f", "f e")]
    assert capsys.readouterr().err == (f"warning: {path}: left out line(s) 2, 4, whose sentence_good and sentence_bad "
                                       f"are the same sentence; fix or remove them\n")
    assert read_pairs_jsonl(path) == pairs and capsys.readouterr().err == ""  # said once per process
    only_identical = write_lines(tmp_path / "y.jsonl", [json.dumps({"sentence_good": "a", "sentence_bad": "a"})])
    with pytest.raises(GradspaceError, match="no minimal pairs in the file; .* whose two sentences differ"):
        read_pairs_jsonl(only_identical)


def test_pairs_remember_their_line_without_it_changing_their_identity(tmp_path):
    path = write_lines(tmp_path / "x.jsonl", ["", json.dumps({"sentence_good": "a b", "sentence_bad": "b a"})])
    [pair] = read_pairs_jsonl(path)
    assert pair.source == f"{path}:2" and pair == MinimalPair("a b", "b a", "x", "x", "1")


def test_write_then_read_round_trip(tmp_path):
    pairs = [MinimalPair("the dog runs .", "the dog run .", "sva_simple", "agreement", str(i)) for i in range(3)]
    assert read_pairs_jsonl(write_pairs_jsonl(tmp_path / "sva_simple.jsonl", pairs)) == pairs


def make_suite() -> TaskSuite:
    return TaskSuite("synth", [
        MinimalPair(f"g{t}{i}", f"b{t}{i}", task, group, str(i))
        for t, (task, group) in enumerate([("t1", "g1"), ("t2", "g1"), ("t3", "g2")]) for i in range(50)
    ])


def test_select_by_task_group_and_all():
    suite = make_suite()
    assert suite.select(["g1"]) == ["t1", "t2"]
    assert suite.select(["t3", "t1"]) == ["t1", "t3"]
    assert suite.select(["all"]) == ["t1", "t2", "t3"]
    with pytest.raises(GradspaceError, match="unknown task 'nope'.*known phenomena: g1, g2"):
        suite.select(["nope"])
    with pytest.raises(GradspaceError, match="no task selected"):
        suite.select([])


def test_split_is_deterministic_disjoint_and_complete():
    pairs = make_suite().pairs
    split = split_pairs(pairs, 0.2, reserve_fraction=0.1)
    assert split == split_pairs(list(pairs), 0.2, reserve_fraction=0.1)
    parts = [set(split.train), set(split.eval), set(split.reserved)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert sum(map(len, parts)) == len(pairs)
    assert 10 <= len(split.eval) <= 50 and 3 <= len(split.reserved) <= 30
    assert split_pairs(pairs, 0.2, seed=1) != split_pairs(pairs, 0.2)
    # Reserving pairs takes them from training only: the eval pairs stay the same.
    assert split_pairs(pairs, 0.2).eval == split.eval


def test_blimp_groups_are_known_without_data():
    assert len(BLIMP_PARADIGMS) == 67 and len(set(BLIMP_PARADIGMS.values())) == 13
    assert len(blimp_paradigms_for(["subject_verb_agreement"])) == 6
    assert len(blimp_paradigms_for(["s-selection"])) == 2
    with pytest.raises(GradspaceError, match="unknown BLiMP task 'sva_pp'"):
        blimp_paradigms_for(["sva_pp"])


@needs_blimp
def test_real_blimp_directory_reads_all_paradigms(capsys, unreported):
    suite = TaskSuite("blimp", read_pairs_dir(BLIMP_DIR))
    # BLiMP itself has 7 pairs whose two sentences are the same; they are left out, each line named.
    assert len(suite.tasks) == 67 and len(suite.pairs) == 67_000 - 7
    left_out = [line.split(": left out line(s) ")[1].split(", whose")[0] for line in capsys.readouterr().err.splitlines()]
    assert left_out == ["325, 811", "106, 288, 373, 817, 968"]
    assert suite.phenomena == BLIMP_PARADIGMS
    assert len(suite.select(["subject_verb_agreement"])) == 6


def test_timings_are_split_from_results(tmp_path):
    from gradspace.utils.io import split_timings, write_results

    results = {"acc": 0.5, "seconds": 3.0, "rows": [{"x": 1, "wall_seconds": 2.0}, {"x": 2}], "nested": {"fit_seconds": 1.0, "y": [1]}}
    kept, timed = split_timings(results)
    assert kept == {"acc": 0.5, "rows": [{"x": 1}, {"x": 2}], "nested": {"y": [1]}}
    assert timed == {"seconds": 3.0, "rows": [{"wall_seconds": 2.0}, {}], "nested": {"fit_seconds": 1.0}}
    write_results(tmp_path, results)
    assert json.loads((tmp_path / "results.json").read_text()) == kept
    assert json.loads((tmp_path / "timings.json").read_text()) == timed
