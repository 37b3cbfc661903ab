"""Tests of the demo, `python -m monolith.native_training.examples.demo`.

One command-line test runs the demo in a subprocess exactly as a user would,
with tiny settings; the others call `demo.main` in-process (TensorFlow is
imported once) or test the helpers: flags, the hash-table configs, the
checkpoint and resume, eviction, the MovieLens reader and its errors, AUC,
batching and the progress line.
"""

import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format

from monolith.native_training import entry
from monolith.native_training import hash_table_ops
from monolith.native_training.examples import click_log
from monolith.native_training.examples import demo
from monolith.native_training.examples import movielens
from monolith.native_training.runtime.hash_table import embedding_hash_table_pb2
from tests.native_training.examples import movielens_fixture

MODULE = "monolith.native_training.examples.demo"
FLAGS = [
    "--data", "--data_dir", "--steps", "--batch_size", "--num_examples",
    "--heldout_fraction", "--id_dim", "--tag_dim", "--hist_len", "--table_size",
    "--hidden_units", "--embedding_lr", "--dense_lr", "--seed", "--output_dir",
    "--model_dir", "--export_dir", "--resume", "--log_every"
]
SLOTS = ["item_id", "item_cats", "user_hist", "user_tags"]
AUC_LINE = re.compile(r"^held-out AUC: (\d\.\d{3}) \((.*)\)$", re.MULTILINE)
PROGRESS = re.compile(
    r"^step +(\d+)/(\d+) +loss (\d\.\d{4}) +AUC (\d\.\d{3}|n/a) +[\d,]+ "
    r"examples/s +table rows ([\d,]+) \+ ([\d,]+) +evicted ([\d,]+)$",
    re.MULTILINE)


def _run_demo(*flags):
  """Runs the demo as a user would; returns the CompletedProcess."""
  return subprocess.run([sys.executable, "-m", MODULE] + list(flags),
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        universal_newlines=True,
                        timeout=300,
                        check=False)


def _main(capsys, *flags):
  """Runs demo.main in-process; returns (exit code, stdout, stderr)."""
  code = demo.main(list(flags))
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def _read_configs(folder, slots):
  configs = {}
  for slot in slots:
    with open(os.path.join(folder, slot + ".pbtxt")) as f:
      configs[slot] = text_format.Parse(
          f.read(), embedding_hash_table_pb2.EmbeddingHashTableConfig())
  return configs


# The command-line run the resume tests continue: 60 steps with --model_dir.
CLI_FLAGS = [
    "--batch_size", "256", "--num_examples", "19200", "--id_dim", "8",
    "--tag_dim", "4", "--table_size", "1024", "--log_every", "30"
]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
  """Runs the demo once as a user would: (CompletedProcess, model_dir)."""
  model_dir = str(tmp_path_factory.mktemp("cli") / "model")  # Created by it.
  result = _run_demo("--steps", "60", "--model_dir", model_dir, *CLI_FLAGS)
  return result, model_dir


def test_tiny_run_trains_through_hash_tables_and_checkpoints(cli_run):
  result, model_dir = cli_run
  assert result.returncode == 0, result.stdout + result.stderr
  out = result.stdout

  # Progress: periodic lines (stdout is a pipe), with table rows.
  assert "\r" not in out
  progress = PROGRESS.findall(out)
  assert [p[0] for p in progress] == ["30", "60"], out
  # item_id + user_hist ids in table 0 (1000 items each at most), the 40
  # categories and verticals + 20 tags in table 1.
  rows = [(int(p[4].replace(",", "")), int(p[5])) for p in progress]
  assert all(500 < r0 <= 2000 and 20 < r1 <= 60 for r0, r1 in rows), out
  assert "hash tables: 4 slots in 2 tables" in out
  assert "table 0: item_id, user_hist: segments 1 ftrl fp32 + 8 adagrad " \
      "fp16" in out
  assert "table 1: item_cats, user_tags: segments 4 adam fixed_r8" in out

  match = AUC_LINE.search(out)
  assert match, out
  assert float(match.group(1)) > 0.5, out
  assert match.group(2) == "> 0.5: the model learned"
  assert out.rstrip().splitlines()[-1] == match.group(0)

  # Configs and checkpoint go to --model_dir.
  assert "wrote 4 table configs (pbtxt) to " + model_dir in out
  assert "wrote checkpoint {}/model.ckpt-60".format(model_dir) in out
  assert tf.train.latest_checkpoint(model_dir).endswith("model.ckpt-60")
  keys = dict(tf.train.list_variables(tf.train.latest_checkpoint(model_dir)))
  for table in ("MonolithHashTable_0", "MonolithHashTable_1"):
    assert any(
        k.startswith(table + "/") and k.endswith("/index-keys")
        for k in keys), sorted(keys)
    assert table + "/storage/w0" in keys, sorted(keys)
  assert "dnn1/kernel" in keys and "global_step" in keys
  with open(os.path.join(model_dir, "demo_flags.json")) as f:
    assert json.load(f)["id_dim"] == 8

  configs = _read_configs(model_dir, SLOTS)
  for slot, config in configs.items():
    assert config.WhichOneof("type") == "cuckoo", slot
    assert config.initial_capacity == 1024, slot
  segments = {
      slot: [(s.dim_size, s.opt_config.WhichOneof("type"),
              s.comp_config.WhichOneof("type"))
             for s in config.entry_config.segments
            ] for slot, config in configs.items()
  }
  assert segments["item_id"] == [(1, "ftrl", "fp32"), (8, "adagrad", "fp16")]
  assert segments["item_cats"] == [(4, "adam", "fixed_r8")]
  assert configs["item_id"] == configs["user_hist"]
  assert configs["item_cats"] == configs["user_tags"]
  assert configs["item_id"].enable_feature_eviction
  assert configs["item_id"].feature_evict_every_n_hours == 24
  expire = configs["item_id"].slot_expire_time_config.slot_expire_times
  assert [(e.slot, e.expire_time) for e in expire] == [(1, 2)]
  assert not configs["item_cats"].enable_feature_eviction


def test_resumed_run_continues_exactly_where_it_stopped(capsys, tmp_path,
                                                        cli_run):
  whole = cli_run[0].stdout
  split = str(tmp_path / "split")
  code, first, _ = _main(capsys, "--steps", "30", "--model_dir", split,
                         *CLI_FLAGS)
  assert code == 0, first
  code, resumed, _ = _main(capsys, "--steps", "60", "--model_dir", split,
                           "--resume", *CLI_FLAGS)
  assert code == 0, resumed
  assert "resumed from {}/model.ckpt-30 (step 30)".format(split) in resumed
  assert "training steps 31..60 of 256 examples" in resumed
  assert [p[0] for p in PROGRESS.findall(resumed)] == ["60"]
  # Same loss, table rows and evictions at step 60 and the same held-out
  # AUC as the uninterrupted run: the tables, the DNN, Adam's slots, the
  # global step (learning-rate decay) and the eviction counts were all
  # restored. (The progress AUC is over the batches since the resume.)
  last = lambda text: PROGRESS.findall(text)[-1]
  pick = lambda line: (line[2],) + line[4:]
  assert pick(last(resumed)) == pick(last(whole)), (resumed, whole)
  assert last(first)[2] != last(whole)[2]
  assert float(last(resumed)[3]) > 0.55, resumed  # Not back at chance.
  assert AUC_LINE.search(resumed).group(1) == AUC_LINE.search(whole).group(1)
  assert int(last(whole)[6].replace(
      ",", "")) > 0  # Entries were evicted (item_id, 2 days).


def test_resume_refuses_changed_flags_and_missing_checkpoints(
    capsys, tmp_path, cli_run):
  model_dir = cli_run[1]
  cases = [
      (["--steps", "80", "--model_dir", model_dir] + CLI_FLAGS,
       "already holds a checkpoint"),
      (["--steps", "80", "--model_dir", model_dir, "--resume"] + CLI_FLAGS +
       ["--id_dim", "6"], "these flags differ from the run that wrote the "
       "checkpoint: --id_dim 6 (checkpoint: 8)\n"),
      (["--steps", "60", "--model_dir", model_dir, "--resume"] + CLI_FLAGS,
       "the checkpoint is at step 60, so --steps 60 leaves nothing to train"),
      (["--steps", "80", "--model_dir",
        str(tmp_path / "empty"), "--resume"], "no checkpoint in --model_dir"),
      (["--resume"], "--resume needs --model_dir"),
  ]
  for flags, message in cases:
    with pytest.raises(SystemExit) as exit_info:
      demo.parse_args(flags)
    assert exit_info.value.code == 2, flags
    assert message in capsys.readouterr().err, flags


def test_ctrl_c_saves_a_checkpoint_to_resume_from(capsys, tmp_path,
                                                  monkeypatch):
  model_dir = str(tmp_path / "model")
  feed_dict = demo.ctr_model.feed_dict
  calls = []

  def interrupt_on_step_5(*args):
    calls.append(1)
    if len(calls) == 5:
      raise KeyboardInterrupt()
    return feed_dict(*args)

  monkeypatch.setattr(demo.ctr_model, "feed_dict", interrupt_on_step_5)
  code, out, _ = _main(capsys, "--steps", "8", "--batch_size", "64",
                       "--num_examples", "3200", "--hidden_units", "8",
                       "--log_every", "2", "--model_dir", model_dir)
  assert code == 130, out
  assert [p[0] for p in PROGRESS.findall(out)] == ["2", "4"]
  assert "wrote checkpoint {}/model.ckpt-4".format(model_dir) in out
  assert out.rstrip().endswith(
      "stopped at step 4; add --resume to the same command to continue")
  assert "held-out AUC" not in out


def test_movielens_fixture_trains(capsys, tmp_path):
  data_dir = movielens_fixture.write_movielens_files(str(tmp_path / "ml"))
  code, out, err = _main(capsys, "--data", "movielens", "--data_dir", data_dir,
                         "--steps", "25", "--batch_size", "64", "--log_every",
                         "25", "--id_dim", "4", "--tag_dim", "4",
                         "--output_dir", str(tmp_path / "cfg"))
  assert code == 0, out + err
  assert "training part: 1,600 examples" in out
  assert "hash tables: 8 slots in 2 tables" in out
  assert ("table 0: user_id, item_id, user_hist: segments 1 ftrl fp32 + 4 "
          "adagrad fp16") in out
  assert ("table 1: item_genres, user_age, user_gender, user_occupation, "
          "user_zip: segments 4 adam fixed_r8") in out
  assert len(PROGRESS.findall(out)) == 1, out
  assert re.search(
      r"^held-out AUC of the items' training click rates \(a "
      r"baseline\): \d\.\d{3}$", out, re.MULTILINE), out
  match = AUC_LINE.search(out)
  assert match and float(match.group(1)) > 0.6, out
  assert sorted(os.listdir(tmp_path / "cfg")) == sorted(
      s + ".pbtxt" for s in movielens.MOVIELENS_SLOTS)


EXPORT_LINE = re.compile(
    r"^held-out AUC of the exported model, served by TensorFlow alone "
    r"\(monolith importable: (\w+)\): (\d\.\d{3}) \(training graph: "
    r"(\d\.\d{3})\)$", re.MULTILINE)


def test_export_serves_the_same_auc_without_monolith(capsys, tmp_path):
  export_dir = str(tmp_path / "saved_model")
  code, out, err = _main(capsys, "--steps", "40", "--batch_size", "256",
                         "--num_examples", "19200", "--id_dim", "8",
                         "--tag_dim", "4", "--log_every", "40", "--output_dir",
                         str(tmp_path / "cfg"), "--export_dir", export_dir)
  assert code == 0, out + err
  match = EXPORT_LINE.search(out)
  assert match, out
  assert match.group(1) == "False"  # The serving process had no monolith.
  served, trained = float(match.group(2)), float(match.group(3))
  assert trained == float(AUC_LINE.search(out).group(1))
  # fp16 and fixed_r8 segments are served compressed: AUC within 0.01.
  assert abs(served - trained) <= 0.01, out
  assert os.path.isfile(os.path.join(export_dir, "saved_model.pb"))
  loaded = tf.saved_model.load(export_dir)
  assert {"serving_default", "update_table_0",
          "load_table_1"} <= set(loaded.signatures)


def test_bad_data_file_is_reported_with_file_and_line(capsys, tmp_path):
  data_dir = movielens_fixture.write_movielens_files(str(tmp_path / "ml"),
                                                     num_ratings=300)
  with open(os.path.join(data_dir, "u.data"), "a") as f:
    f.write("1\t2\tfive\t881250949\n")
  code, out, err = _main(capsys, "--data", "movielens", "--data_dir", data_dir)
  assert code == 1
  assert ("{}, line 301: the rating must be an integer, got 'five'".format(
      os.path.join(data_dir, "u.data"))) in err
  assert "held-out AUC" not in out
  os.remove(os.path.join(data_dir, "u.user"))
  code, _, err = _main(capsys, "--data", "movielens", "--data_dir", data_dir)
  assert code == 1
  assert os.path.join(data_dir, "u.user") + ": no such file" in err
  assert "ml-100k.zip" in err


def test_bad_flag_exits_with_code_2_and_says_why(capsys):
  # `python -m ...demo` runs `sys.exit(main())`: the SystemExit code is the
  # process's exit code.
  with pytest.raises(SystemExit) as exit_info:
    demo.main(["--steps", "0"])
  assert exit_info.value.code == 2
  captured = capsys.readouterr()
  assert "argument --steps: must be >= 1, got 0" in captured.err
  assert "usage: python -m " + MODULE in captured.err
  assert captured.out == ""


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
    (["--data", "csv"], "argument --data: invalid choice: 'csv'"),
    (["--data", "movielens"], "--data movielens needs --data_dir"),
    (["--data", "movielens", "--data_dir", "/nonexistent/ml-100k"
     ], "--data_dir '/nonexistent/ml-100k' is not a folder"),
    (["--data_dir", "."], "--data_dir is only read with --data movielens"),
    (["--data", "movielens", "--data_dir", ".", "--num_examples", "9"
     ], "--num_examples sizes the synthetic log"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_flag_values_are_rejected(capsys, flags, message):
  with pytest.raises(SystemExit) as exit_info:
    demo.parse_args(flags)
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--output_dir", "--model_dir"])
def test_folder_flag_that_is_a_file_is_rejected(capsys, tmp_path, flag):
  path = tmp_path / "a_file"
  path.write_text("")
  with pytest.raises(SystemExit) as exit_info:
    demo.parse_args([flag, str(path)])
  assert exit_info.value.code == 2
  assert "exists and is not a folder" in capsys.readouterr().err


def test_help_documents_every_flag(capsys):
  with pytest.raises(SystemExit) as exit_info:
    demo.parse_args(["--help"])
  assert exit_info.value.code == 0
  text = capsys.readouterr().out
  assert set(re.findall(r"--[a-z_]+", text)) == set(FLAGS + ["--help"])
  # Every flag is followed by its own help text.
  for flag in FLAGS:
    assert re.search(r"^  " + flag + r"( [A-Z_{},]+)?\s+\S", text,
                     re.MULTILINE), flag
  assert "(default: 400)" in text
  assert "ml-100k.zip" in text


def test_defaults_parse():
  args = demo.parse_args([])
  assert (args.data, args.steps, args.num_examples) == ("synthetic", 400,
                                                        256000)
  assert args.output_dir is None and args.model_dir is None


def test_configs_mix_optimizers_and_compressors_and_share_tables():
  args = demo.parse_args([])
  configs = demo.build_table_configs(args, click_log.SYNTHETIC_SLOTS, 400,
                                     {"item_id": 2})
  groups = demo.group_slots(configs)
  assert [slots for _, slots in groups] == [["item_id", "user_hist"],
                                            ["item_cats", "user_tags"]]
  assert str(configs["item_id"]) == str(configs["user_hist"])
  assert str(configs["item_id"]) != str(configs["item_cats"])
  segments = [
      s for instance, _ in groups
      for s in instance.table_config.entry_config.segments
  ]
  assert {s.opt_config.WhichOneof("type") for s in segments
         } == {"ftrl", "adagrad", "adam"}
  assert {s.comp_config.WhichOneof("type") for s in segments
         } == {"fp32", "fp16", "fixed_r8"}
  assert [len(instance.learning_rate_fns) for instance, _ in groups] == [2, 1]
  # Each config builds a table (one learning rate per segment).
  with tf.Graph().as_default():
    for instance, _ in groups:
      table = hash_table_ops.hash_table_from_config(instance)
      assert table.dim_size == sum(
          s.dim_size for s in instance.table_config.entry_config.segments)


def test_tables_evict_once_a_day_of_log_time():
  config = embedding_hash_table_pb2.EmbeddingHashTableConfig()
  due = lambda before, now: demo._evictions_due(config, before, now, 1000)  # pylint: disable=protected-access
  assert not due(1000, 1000 + 90000)  # Eviction not enabled.
  entry.CuckooHashTableConfig(
      feature_evict_every_n_hours=24).mutate_table(config)
  assert not due(1000, 1000 + 86399)
  assert due(1000 + 86399, 1000 + 86400)
  assert not due(1000 + 86400, 1000 + 2 * 86399)
  assert due(1000 + 86400, 1000 + 5 * 86400)  # At most once per step.


def test_batch_stream_is_time_ordered_and_its_clock_never_goes_back():
  log = click_log.generate_click_log(1000, seed=1)
  stream = click_log.BatchStream(log, 300)  # 3 batches per pass.
  np.testing.assert_array_equal(stream.rows(1), np.arange(300))
  np.testing.assert_array_equal(stream.rows(3), np.arange(600, 900))
  np.testing.assert_array_equal(stream.rows(4), np.arange(300))
  clocks = [stream.clock(step) for step in range(1, 10)]
  assert clocks == sorted(clocks) and len(set(clocks)) == 9
  assert clocks[0] == log.timestamps[299]
  assert clocks[3] - clocks[0] == log.timestamps[899] - log.timestamps[0] + 1


# ---------------------------------------------------------------------------
# MovieLens reader.

_ITEMS = [
    "1|Toy Story (1995)|01-Jan-1995||http://x/1|" +
    "|".join("0001110000000000000"),
    "2|Caf\u00e9 (1996)|01-Jan-1996||http://x/2|" +
    "|".join("1000000000000000000"),
    "3|Nothing (1997)|01-Jan-1997||http://x/3|" + "|".join("0" * 19),
]
_USERS = ["1|24|M|technician|85711", "2|53|F|other|T8H1N"]
_RATINGS = ["1\t1\t5\t300", "1\t2\t3\t100", "2\t3\t4\t200", "1\t3\t1\t200"]


def _write(folder, items=None, users=None, ratings=None):
  os.makedirs(folder, exist_ok=True)
  for name, lines in (("u.item", items or
                       _ITEMS), ("u.user", users or
                                 _USERS), ("u.data", ratings or _RATINGS)):
    if lines != "missing":
      with open(os.path.join(folder, name), "w", encoding="latin-1") as f:
        f.write("\n".join(lines) + "\n")
  return folder


def test_movielens_reader_builds_time_ordered_examples(tmp_path):
  log = movielens.read_movielens(_write(str(tmp_path)))
  raw = lambda slot: [(list(v & ((1 << 48) - 1)), list(v >> 48)) for v in
                      (log.slots[slot].take([r])[0] for r in range(len(log)))]
  # Time order; the two ratings at t=200 keep their file order.
  assert log.timestamps.tolist() == [100, 200, 200, 300]
  assert [r[0] for r in raw("item_id")] == [[2], [3], [3], [1]]
  assert [r[0] for r in raw("user_id")] == [[1], [2], [1], [1]]
  assert log.labels.tolist() == [0.0, 1.0, 0.0, 1.0]  # rating >= 4.
  # Earlier-rated items of the same user, most recent first.
  assert [r[0] for r in raw("user_hist")] == [[], [], [2], [3, 2]]
  assert [r[0] for r in raw("item_genres")] == [[0], [], [], [3, 4, 5]]
  assert [r[0] for r in raw("user_age")] == [[1], [5], [1], [1]]
  for slot, spec in movielens.MOVIELENS_SLOTS.items():
    assert all(set(r[1]) <= {spec.number} for r in raw(slot)), slot
  gender = [r[0][0] for r in raw("user_gender")]
  assert gender[0] == gender[2] != gender[1]
  zips = [r[0][0] for r in raw("user_zip")]
  assert zips[1] == movielens._string_id("T8H")  # pylint: disable=protected-access


def test_movielens_history_is_capped(tmp_path):
  ratings = ["1\t{}\t4\t{}".format(1 + k % 3, 100 + k) for k in range(8)]
  log = movielens.read_movielens(_write(str(tmp_path), ratings=ratings),
                                 max_history=3)
  assert log.slots["user_hist"].row_lengths.tolist() == [0, 1, 2, 3, 3, 3, 3, 3]
  values, _ = log.slots["user_hist"].take([7])
  assert (values & 0xFFFF).tolist() == [1 + 6 % 3, 1 + 5 % 3, 1 + 4 % 3]


@pytest.mark.parametrize("name, lines, message", [
    ("u.data", _RATINGS[:1] + ["1\t1\t5"], "u.data, line 2: expected 4 "
     "tab-separated fields (user id, item id, rating, timestamp), got 3"),
    ("u.data", ["1\t1\t9\t300"], "u.data, line 1: the rating must be in "
     "[1, 5], got 9"),
    ("u.data", ["1\tx\t5\t300"], "u.data, line 1: the item id must be an "
     "integer, got 'x'"),
    ("u.data", _RATINGS + ["7\t1\t5\t300"], "u.data, line 5: user 7 is not "
     "in u.user"),
    ("u.data", ["1\t4\t5\t300"], "u.data, line 1: item 4 is not in u.item"),
    ("u.data", ["1\t1\t5\t-3"], "u.data, line 1: the timestamp must be in "
     ">= 0, got -3"),
    ("u.item", _ITEMS[:2] + ["3|short|x"], "u.item, line 3: expected 24 "
     "|-separated fields"),
    ("u.item", [_ITEMS[0][:-1] + "2"] + _ITEMS[1:], "u.item, line 1: the "
     "last 19 fields are genre flags and must be 0 or 1"),
    ("u.item", _ITEMS + _ITEMS[:1], "u.item, line 4: movie id 1 appears "
     "twice"),
    ("u.user", _USERS[:1] + ["2|53|F|other"], "u.user, line 2: expected 5 "
     "|-separated fields"),
    ("u.user", ["1|old|M|technician|85711"], "u.user, line 1: the age must "
     "be an integer, got 'old'"),
    ("u.user", ["1|24||technician|85711"], "u.user, line 1: the gender is "
     "empty"),
    ("u.item", "missing", "u.item: no such file"),
    ("u.data", [""], "u.data: no ratings"),
])
def test_movielens_errors_name_the_file_and_line(tmp_path, name, lines,
                                                 message):
  folder = _write(
      str(tmp_path), **{
          {
              "u.item": "items",
              "u.user": "users",
              "u.data": "ratings"
          }[name]: lines
      })
  if lines == [""]:
    open(os.path.join(folder, name), "w").close()
  with pytest.raises(movielens.MovieLensError) as error:
    movielens.read_movielens(folder)
  assert os.path.join(folder, message) in str(error.value)


def test_item_rate_baseline():
  train = click_log.ClickLog(
      {"item_id": click_log.RaggedColumn([1, 1, 2, 2], [1, 1, 1, 1])},
      [1, 1, 0, 0], [0, 1, 2, 3])
  heldout = click_log.ClickLog(
      {"item_id": click_log.RaggedColumn([2, 1, 3], [1, 1, 1])}, [0, 1, 1],
      [4, 5, 6])
  scores = movielens.item_rate_baseline(train, heldout)
  np.testing.assert_allclose(scores, [2.5 / 7, 4.5 / 7, 0.5])


# ---------------------------------------------------------------------------
# Helpers.


def test_roc_auc():
  assert click_log.roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
  assert click_log.roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
  assert click_log.roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
  # 3 of the 4 (positive, negative) pairs are ordered, 1 tied: 3.5 / 4.
  assert click_log.roc_auc([0, 1, 0, 1], [0.1, 0.3, 0.3, 0.9]) == 0.875
  assert np.isnan(click_log.roc_auc([1, 1], [0.1, 0.2]))
  rng = np.random.default_rng(0)
  labels = rng.random(300) < 0.3
  scores = np.round(rng.random(300), 1)  # Many ties.
  pos, neg = scores[labels], scores[~labels]
  pairs = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
  assert click_log.roc_auc(labels, scores) == pytest.approx(pairs.mean())


def test_ragged_column_take_and_first():
  column = click_log.RaggedColumn([1, 2, 3, 4, 5, 6], [1, 0, 2, 3])
  values, lengths = column.take(np.array([3, 1, 0]))
  assert values.tolist() == [4, 5, 6, 1]
  assert lengths.tolist() == [3, 0, 1]
  first = column.first(2)
  assert first.values.tolist() == [1, 2, 3, 4, 5]
  assert first.row_lengths.tolist() == [1, 0, 2, 2]


def test_click_log_is_deterministic_time_ordered_and_has_empty_rows():
  first = click_log.generate_click_log(1000, seed=7)
  second = click_log.generate_click_log(1000, seed=7)
  np.testing.assert_array_equal(first.labels, second.labels)
  for slot in SLOTS:
    np.testing.assert_array_equal(first.slots[slot].values,
                                  second.slots[slot].values)
    assert len(first.slots[slot].row_lengths) == 1000
    spec = click_log.SYNTHETIC_SLOTS[slot]
    assert (first.slots[slot].values >> 48 == spec.number).all(), slot
  for slot in ["item_cats", "user_hist", "user_tags"]:
    assert (first.slots[slot].row_lengths == 0).any(), slot
  assert 0.2 < first.labels.mean() < 0.8
  assert (np.diff(first.timestamps) >= 0).all()
  assert first.timestamps[-1] - first.timestamps[0] < 30 * 86400
  train, heldout = first.split(800)
  assert (len(train), len(heldout)) == (800, 200)
  np.testing.assert_array_equal(heldout.slots["user_hist"].row_lengths,
                                first.slots["user_hist"].row_lengths[800:])
  np.testing.assert_array_equal(heldout.timestamps, first.timestamps[800:])


def test_slot_spec_rejects_bad_values():
  with pytest.raises(ValueError, match="kind must be one of"):
    click_log.SlotSpec(1, "vector", "ReduceSum", "user")
  with pytest.raises(ValueError, match=r"number must be in \[1, 32767\]"):
    click_log.SlotSpec(1 << 15, "id", "ReduceSum", "user")


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
    bar.update(step, 0.5,
               float("nan") if step < 4 else 0.75, 1000.0, [1234, 56], step)
  lines = stream.getvalue().splitlines()
  assert [line.split("/")[0] for line in lines
         ] == ["step  4", "step  8", "step 10"]
  assert lines[0] == ("step  4/10  loss 0.5000  AUC 0.750  1,000 examples/s  "
                      "table rows 1,234 + 56  evicted 4")
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
