"""Tests of the demo, `python -m monolith.native_training.examples.demo`.

The command-line tests run the demo in a subprocess exactly as a user would,
with tiny settings; the helpers (flag checks, AUC, batching, progress line,
table configs) are tested in-process.
"""

import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import text_format

from monolith.native_training.examples import demo
from monolith.native_training.runtime.hash_table import embedding_hash_table_pb2

MODULE = "monolith.native_training.examples.demo"
FLAGS = [
    "--steps", "--batch_size", "--num_examples", "--heldout_fraction",
    "--id_dim", "--tag_dim", "--hist_len", "--table_size", "--hidden_units",
    "--embedding_lr", "--dense_lr", "--seed", "--output_dir", "--log_every"
]
SLOTS = ["item_id", "item_cats", "user_hist", "user_tags"]
AUC_LINE = re.compile(r"^held-out AUC: (\d\.\d{3}) \((.*)\)$", re.MULTILINE)


def _run_demo(*flags):
  """Runs the demo as a user would; returns the CompletedProcess."""
  return subprocess.run([sys.executable, "-m", MODULE] + list(flags),
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        universal_newlines=True,
                        timeout=300,
                        check=False)


def test_tiny_run_trains_and_writes_parseable_table_configs(tmp_path):
  output_dir = str(tmp_path / "configs")  # Missing: the demo creates it.
  # About a second of training; held-out AUC 0.57 with the default seed.
  result = _run_demo("--steps", "60", "--batch_size", "256", "--num_examples",
                     "19200", "--id_dim", "8", "--tag_dim", "4", "--table_size",
                     "2048", "--log_every", "30", "--output_dir", output_dir)
  assert result.returncode == 0, result.stdout + result.stderr

  # Progress: periodic lines (stdout is a pipe, not a terminal).
  assert "\r" not in result.stdout
  steps = re.findall(r"^step +(\d+)/60 +loss \d\.\d{4} +AUC \d\.\d{3} ",
                     result.stdout, re.MULTILINE)
  assert steps == ["30", "60"], result.stdout

  match = AUC_LINE.search(result.stdout)
  assert match, result.stdout
  auc = float(match.group(1))
  assert auc > 0.5, result.stdout
  assert match.group(2) == "> 0.5: the model learned"
  assert "wrote 4 table configs (pbtxt) to " + output_dir in result.stdout

  assert sorted(os.listdir(output_dir)) == sorted(s + ".pbtxt" for s in SLOTS)
  configs = {}
  for slot in SLOTS:
    with open(os.path.join(output_dir, slot + ".pbtxt")) as f:
      configs[slot] = text_format.Parse(
          f.read(), embedding_hash_table_pb2.EmbeddingHashTableConfig())
  for slot, config in configs.items():
    assert config.WhichOneof("type") == "cuckoo", slot
    assert config.initial_capacity == 2048, slot
    for segment in config.entry_config.segments:
      assert segment.opt_config.WhichOneof("type") == "adagrad", slot
      assert segment.comp_config.WhichOneof("type") == "fp32", slot
  dims = {
      slot: [s.dim_size for s in config.entry_config.segments]
      for slot, config in configs.items()
  }
  assert dims == {
      "item_id": [1, 8],
      "user_hist": [1, 8],
      "item_cats": [4],
      "user_tags": [4]
  }
  assert configs["item_id"] == configs["user_hist"]
  assert configs["item_cats"] == configs["user_tags"]
  bias_init = configs["item_id"].entry_config.segments[0].init_config
  assert bias_init.WhichOneof("type") == "zeros"


def test_bad_flag_exits_with_code_2_and_says_why():
  result = _run_demo("--steps", "0")
  assert result.returncode == 2
  assert "argument --steps: must be >= 1, got 0" in result.stderr
  assert "usage: python -m " + MODULE in result.stderr
  assert "held-out AUC" not in result.stdout


@pytest.mark.parametrize("flags, message", [
    (["--steps", "many"], "argument --steps: expected an integer, got 'many'"),
    (["--batch_size", "-5"], "argument --batch_size: must be >= 1, got -5"),
    (["--hist_len", "0"], "argument --hist_len: must be >= 1, got 0"),
    (["--seed", "-1"], "argument --seed: must be >= 0, got -1"),
    (["--heldout_fraction", "1"
     ], "argument --heldout_fraction: must be strictly between 0 and 1, got 1"),
    (["--embedding_lr", "0"
     ], "argument --embedding_lr: must be a finite number > 0, got 0"),
    (["--dense_lr", "nan"
     ], "argument --dense_lr: must be a finite number > 0, got nan"),
    (["--dense_lr", "fast"], "argument --dense_lr: expected a number, got "
     "'fast'"),
    (["--num_examples", "500"], "leaves 100 held-out examples; at least 200"),
    (["--num_examples", "1000", "--batch_size", "900"
     ], "--batch_size 900 is larger than the 800 training examples"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_flag_values_are_rejected(capsys, flags, message):
  with pytest.raises(SystemExit) as exit_info:
    demo.parse_args(flags)
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err


def test_output_dir_that_is_a_file_is_rejected(capsys, tmp_path):
  path = tmp_path / "a_file"
  path.write_text("")
  with pytest.raises(SystemExit) as exit_info:
    demo.parse_args(["--output_dir", str(path)])
  assert exit_info.value.code == 2
  assert "exists and is not a folder" in capsys.readouterr().err


def test_help_documents_every_flag(capsys):
  with pytest.raises(SystemExit) as exit_info:
    demo.parse_args(["--help"])
  assert exit_info.value.code == 0
  text = capsys.readouterr().out
  assert set(re.findall(r"--[a-z_]+", text)) == set(FLAGS + ["--help"])
  # Every flag is followed by its own help text, defaults shown.
  for flag in FLAGS:
    assert re.search(r"^  " + flag + r" [A-Z_]+\s+\S", text, re.MULTILINE), flag
  assert "(default: 400)" in text


def test_defaults_parse():
  args = demo.parse_args([])
  assert args.steps == 400
  assert args.output_dir is None


def test_roc_auc():
  assert demo.roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
  assert demo.roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
  assert demo.roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
  # 3 of the 4 (positive, negative) pairs are ordered, 1 tied: 3.5 / 4.
  assert demo.roc_auc([0, 1, 0, 1], [0.1, 0.3, 0.3, 0.9]) == 0.875
  assert np.isnan(demo.roc_auc([1, 1], [0.1, 0.2]))
  rng = np.random.default_rng(0)
  labels = rng.random(300) < 0.3
  scores = np.round(rng.random(300), 1)  # Many ties.
  pos, neg = scores[labels], scores[~labels]
  pairs = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
  assert demo.roc_auc(labels, scores) == pytest.approx(pairs.mean())


def test_ragged_column_take():
  column = demo.RaggedColumn([1, 2, 3, 4, 5, 6], [1, 0, 2, 3])
  values, lengths = column.take(np.array([3, 1, 0]))
  assert values.tolist() == [4, 5, 6, 1]
  assert lengths.tolist() == [3, 0, 1]


def test_click_log_is_deterministic_and_has_empty_rows():
  first = demo.generate_click_log(1000, seed=7)
  second = demo.generate_click_log(1000, seed=7)
  np.testing.assert_array_equal(first.labels, second.labels)
  for slot in SLOTS:
    np.testing.assert_array_equal(first.slots[slot].values,
                                  second.slots[slot].values)
    assert len(first.slots[slot].row_lengths) == 1000
  for slot in ["item_cats", "user_hist", "user_tags"]:
    assert (first.slots[slot].row_lengths == 0).any(), slot
  assert 0.2 < first.labels.mean() < 0.8
  train, heldout = first.split(800)
  assert (len(train), len(heldout)) == (800, 200)
  np.testing.assert_array_equal(heldout.slots["user_hist"].row_lengths,
                                first.slots["user_hist"].row_lengths[800:])


def test_slots_sharing_a_config_share_a_group():
  configs = demo.build_table_configs(demo.parse_args([]))
  groups = demo.group_slots(configs)
  assert [slots for _, slots in groups] == [["item_id", "user_hist"],
                                            ["item_cats", "user_tags"]]
  assert str(configs["item_id"]) == str(configs["user_hist"])
  assert str(configs["item_id"]) != str(configs["item_cats"])
  assert [len(instance.learning_rate_fns) for instance, _ in groups] == [2, 1]


class _Stream(io.StringIO):
  """A StringIO that says whether it is a terminal."""

  def __init__(self, tty):
    super().__init__()
    self._tty = tty

  def isatty(self):
    return self._tty


def test_progress_bar_prints_periodic_lines_when_not_a_terminal():
  stream = _Stream(tty=False)
  bar = demo.ProgressBar(10, stream, every=4)
  for step in range(1, 11):
    bar.update(step, 0.5, float("nan") if step < 4 else 0.75, 1000.0)
  lines = stream.getvalue().splitlines()
  assert [line.split("/")[0] for line in lines
         ] == ["step  4", "step  8", "step 10"]
  assert lines[0] == "step  4/10  loss 0.5000  AUC 0.750  1,000 examples/s"
  assert "\r" not in stream.getvalue()


def test_progress_bar_redraws_one_line_on_a_terminal():
  stream = _Stream(tty=True)
  bar = demo.ProgressBar(3, stream)
  for step in range(1, 4):
    bar.update(step, 0.5, float("nan"), 10.0)
  text = stream.getvalue()
  assert text.startswith("\rstep 1/3  loss 0.5000  AUC n/a")
  assert text.endswith("\rstep 3/3  loss 0.5000  AUC n/a    10 examples/s\n")
  assert text.count("\n") == 1
