"""The command line behaves the same in every tool: --help fits on a screen without third-party
warnings, trailing KEY VALUE overrides, and one-line errors for a misspelled key or dataset."""

from __future__ import annotations

import subprocess
import sys

import pytest

from instseg_d2.utils.cli import ToolArgumentParser, run_tool, split_overrides
from instseg_d2.utils.errors import UserError

SCREEN_LINES = 45


def _run(repo_root, tool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(repo_root / "tools" / tool), *args],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "tool",
    [
        "train_net.py",
        "infer.py",
        "compare.py",
        "visualize_data.py",
        "plot_metrics.py",
        "make_report.py",
        "results_table.py",
        "validate_dataset.py",
        "dataset_summary.py",
        "export_coco.py",
        "convert_dataset.py",
        "analyze_errors.py",
        "cross_validate.py",
        "compare_runs.py",
        "export_model.py",
        "predict_exported.py",
        "benchmark.py",
    ],
)
def test_help_fits_on_a_screen_without_warnings(repo_root, tool):
    proc = _run(repo_root, tool, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--output" in proc.stdout
    assert len(proc.stdout.splitlines()) <= SCREEN_LINES
    assert "Warning" not in proc.stderr and "deprecated" not in proc.stderr, proc.stderr


def test_misspelled_config_key_is_one_line_with_the_close_match(repo_root, tmp_path):
    proc = _run(repo_root, "train_net.py", "--config-file",
                "configs/PennFudan/mask_rcnn_R_18_FPN_gn_scratch_cpu.yaml",
                "SOLVER.MAX_ITR", "10", "OUTPUT_DIR", str(tmp_path))  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: override SOLVER.MAX_ITR: unknown config key SOLVER.MAX_ITR; "
        "did you mean SOLVER.MAX_ITER?"
    )


def test_misspelled_key_inside_a_config_file_names_the_file(repo_root, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(
        '_BASE_: "' + str(repo_root / "configs/PennFudan/mask_rcnn_R_18_FPN_gn_scratch_cpu.yaml")
        + '"\nSOLVER:\n  BASE_RL: 0.01\n'
    )  # fmt: skip
    proc = _run(repo_root, "infer.py", "--config-file", str(config), "--input", "x.png",
                "--output", str(tmp_path / "out"))  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert (
        last.startswith(f"error: {config}")
        and "unknown config key SOLVER.BASE_RL; did you mean SOLVER.BASE_LR" in last
    )


def test_unknown_dataset_name_gives_the_close_registered_names(repo_root, tmp_path):
    proc = _run(repo_root, "train_net.py", "--config-file",
                "configs/PennFudan/mask_rcnn_R_18_FPN_gn_scratch_cpu.yaml",
                "DATASETS.TRAIN", "('pennfudan_trian',)", "OUTPUT_DIR", str(tmp_path))  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "dataset 'pennfudan_trian' is not registered; did you mean pennfudan_train" in last
    assert "balloon_val_mini" not in last  # not the whole catalog


def test_overrides_start_at_the_first_config_key():
    assert split_overrides(["--input", "a.png", "IMG.JPG", "MODEL.DEVICE", "cpu"]) == (
        ["--input", "a.png", "IMG.JPG"],
        ["MODEL.DEVICE", "cpu"],
    )
    assert split_overrides(["--x", "1", "--opts", "OUTPUT_DIR", "o"]) == (
        ["--x", "1"],
        ["OUTPUT_DIR", "o"],
    )
    assert split_overrides(["--x", "1"]) == (["--x", "1"], [])


def test_parser_puts_overrides_in_opts_and_rejects_an_odd_count(capsys):
    parser = ToolArgumentParser("t", output="where")
    parser.add_argument("--input", nargs="+")
    args = parser.parse_args(["--config-file", "c.yaml", "--output", "o", "--input", "a", "b",
                              "SOLVER.MAX_ITER", "3"])  # fmt: skip
    assert args.input == ["a", "b"] and args.opts == ["SOLVER.MAX_ITER", "3"]
    with pytest.raises(SystemExit):
        parser.parse_args(["--config-file", "c", "--output", "o", "SOLVER.MAX_ITER"])
    assert "KEY VALUE pairs" in capsys.readouterr().err


def test_run_tool_turns_user_errors_into_one_line(capsys):
    def failing(_argv):
        raise UserError("data.yaml: key 'trian' is unknown")

    assert run_tool(failing, []) == 1
    assert capsys.readouterr().err == "error: data.yaml: key 'trian' is unknown\n"

    def crashing(_argv):
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):  # a bug keeps its traceback
        run_tool(crashing, [])
