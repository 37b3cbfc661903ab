"""Reads the MovieLens 100K files into a click log for the demo.

MovieLens 100K is GroupLens' `ml-100k.zip` (100,000 ratings of 1,682 movies
by 943 users, September 1997 to April 1998). Unzip it anywhere and point
`read_movielens` (or the demo's `--data_dir`) at the `ml-100k` folder; it
reads three files and nothing is downloaded:

* `u.data`: `user id \\t item id \\t rating \\t timestamp`, one rating a line
  (ratings 1 to 5, timestamps in Unix seconds).
* `u.item`: `movie id | title | release date | video release date |
  IMDb URL | 19 genre flags (0/1)`, latin-1 encoded.
* `u.user`: `user id | age | gender | occupation | zip code`.

Every rating becomes one click-style example, in time order: the label is
1.0 for a rating of 4 or 5, and the features are (slot names as in
`MOVIELENS_SLOTS`): `user_id`, `item_id`, `item_genres` (the movie's genres,
ragged), `user_hist` (the movies the user rated before this one, most
recent first: the sequence a `FirstN` combiner reads), and the user's
`user_age` (bucketed), `user_gender`, `user_occupation` and `user_zip`
(first three characters). String values become ids through CRC-32, so the
same value always gets the same fid.

A file that is missing or malformed raises `MovieLensError`, whose message
names the file and the line.
"""

import collections
import os
import zlib
from typing import Dict, List, Tuple

import numpy as np

from monolith.native_training.examples import click_log

NUM_GENRES = 19
# Age buckets: under 18, 18-24, 25-34, 35-44, 45-49, 50-55, 56 and older.
_AGE_BOUNDS = (18, 25, 35, 45, 50, 56)
_CLICK_RATING = 4
_DOWNLOAD_HINT = ("download ml-100k.zip from GroupLens (MovieLens 100K), "
                  "unzip it and pass the ml-100k folder as --data_dir")

MOVIELENS_SLOTS = collections.OrderedDict([
    ("user_id", click_log.SlotSpec(1, "id", "ReduceSum", "user")),
    ("item_id", click_log.SlotSpec(2, "id", "ReduceSum", "item")),
    ("item_genres", click_log.SlotSpec(3, "tag", "ReduceMean", "item")),
    ("user_hist", click_log.SlotSpec(4, "id", "FirstN", "user")),
    ("user_age", click_log.SlotSpec(5, "tag", "ReduceSum", "user")),
    ("user_gender", click_log.SlotSpec(6, "tag", "ReduceSum", "user")),
    ("user_occupation", click_log.SlotSpec(7, "tag", "ReduceSum", "user")),
    ("user_zip", click_log.SlotSpec(8, "tag", "ReduceSum", "user")),
])


class MovieLensError(ValueError):
  """A MovieLens file is missing or malformed; the message says where."""


def _string_id(text: str) -> int:
  """A stable id for a string value (CRC-32 of its UTF-8 bytes)."""
  return zlib.crc32(text.encode("utf-8"))


def _read_lines(data_dir: str, name: str):
  """Yields (path, line number, line) of a file, skipping blank lines.

  The files are latin-1 (u.item has accented titles); every byte sequence
  is valid latin-1, so decoding never fails.
  """
  path = os.path.join(data_dir, name)
  if not os.path.isfile(path):
    raise MovieLensError(f"{path}: no such file; the MovieLens 100K folder "
                         "must hold u.data, u.item and u.user "
                         f"({_DOWNLOAD_HINT})")
  with open(path, encoding="latin-1", newline="") as f:
    for number, line in enumerate(f, start=1):
      line = line.rstrip("\r\n")
      if line.strip():
        yield path, number, line


def _int_field(path, number, line, fields, index, what, low=None, high=None):
  """Parses fields[index] as an int in [low, high], or raises."""
  text = fields[index].strip()
  try:
    value = int(text)
  except ValueError:
    raise MovieLensError(f"{path}, line {number}: {what} must be an integer, "
                         f"got {text!r} in {line!r}") from None
  if (low is not None and value < low) or (high is not None and value > high):
    bounds = f"[{low}, {high}]" if high is not None else f">= {low}"
    raise MovieLensError(f"{path}, line {number}: {what} must be in {bounds}, "
                         f"got {value} in {line!r}")
  return value


def _read_items(data_dir: str) -> Dict[int, List[int]]:
  """u.item: movie id -> its genre indices (0..18)."""
  items = {}
  for path, number, line in _read_lines(data_dir, "u.item"):
    fields = line.split("|")
    if len(fields) < 5 + NUM_GENRES:
      raise MovieLensError(
          f"{path}, line {number}: expected {5 + NUM_GENRES} |-separated "
          "fields (movie id | title | release date | video release date | "
          f"IMDb URL | {NUM_GENRES} genre flags), got {len(fields)}: {line!r}")
    item = _int_field(path, number, line, fields, 0, "the movie id", low=1)
    if item in items:
      raise MovieLensError(
          f"{path}, line {number}: movie id {item} appears twice")
    flags = fields[-NUM_GENRES:]
    if any(flag.strip() not in ("0", "1") for flag in flags):
      raise MovieLensError(
          f"{path}, line {number}: the last {NUM_GENRES} fields are genre "
          f"flags and must be 0 or 1, got {flags!r}")
    items[item] = [k for k, flag in enumerate(flags) if flag.strip() == "1"]
  if not items:
    raise MovieLensError(f"{os.path.join(data_dir, 'u.item')}: no movies")
  return items


def _read_users(data_dir: str) -> Dict[int, Tuple[int, str, str, str]]:
  """u.user: user id -> (age, gender, occupation, zip code)."""
  users = {}
  for path, number, line in _read_lines(data_dir, "u.user"):
    fields = line.split("|")
    if len(fields) != 5:
      raise MovieLensError(
          f"{path}, line {number}: expected 5 |-separated fields (user id | "
          f"age | gender | occupation | zip code), got {len(fields)}: "
          f"{line!r}")
    user = _int_field(path, number, line, fields, 0, "the user id", low=1)
    if user in users:
      raise MovieLensError(
          f"{path}, line {number}: user id {user} appears twice")
    age = _int_field(path, number, line, fields, 1, "the age", 0, 150)
    gender, occupation, zip_code = (f.strip() for f in fields[2:])
    for what, value in (("gender", gender), ("occupation", occupation),
                        ("zip code", zip_code)):
      if not value:
        raise MovieLensError(
            f"{path}, line {number}: the {what} is empty: {line!r}")
    users[user] = (age, gender, occupation, zip_code)
  if not users:
    raise MovieLensError(f"{os.path.join(data_dir, 'u.user')}: no users")
  return users


def _read_ratings(data_dir: str, users, items) -> np.ndarray:
  """u.data: int64 [n, 4] (user, item, rating, timestamp), file order."""
  rows = []
  for path, number, line in _read_lines(data_dir, "u.data"):
    fields = line.split("\t")
    if len(fields) != 4:
      raise MovieLensError(
          f"{path}, line {number}: expected 4 tab-separated fields (user id, "
          f"item id, rating, timestamp), got {len(fields)}: {line!r}")
    user = _int_field(path, number, line, fields, 0, "the user id", low=1)
    item = _int_field(path, number, line, fields, 1, "the item id", low=1)
    rating = _int_field(path, number, line, fields, 2, "the rating", 1, 5)
    timestamp = _int_field(path,
                           number,
                           line,
                           fields,
                           3,
                           "the timestamp",
                           low=0)
    if user not in users:
      raise MovieLensError(f"{path}, line {number}: user {user} is not in "
                           f"u.user: {line!r}")
    if item not in items:
      raise MovieLensError(f"{path}, line {number}: item {item} is not in "
                           f"u.item: {line!r}")
    rows.append((user, item, rating, timestamp))
  if not rows:
    raise MovieLensError(f"{os.path.join(data_dir, 'u.data')}: no ratings")
  return np.array(rows, dtype=np.int64)


def _history(user: np.ndarray, item: np.ndarray,
             max_history: int) -> click_log.RaggedColumn:
  """Per example (in time order) the user's earlier items, newest first."""
  n = len(user)
  by_user = np.lexsort((np.arange(n), user))  # Time order within a user.
  sorted_user = user[by_user]
  first = np.r_[True, sorted_user[1:] != sorted_user[:-1]]
  group_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
  position = np.arange(n) - group_start  # Earlier ratings of the user.
  where = np.empty(n, dtype=np.int64)
  where[by_user] = np.arange(n)  # Example -> its index in by_user.
  lengths = np.minimum(position[where], max_history)
  starts = np.cumsum(lengths) - lengths
  back = np.arange(lengths.sum()) - np.repeat(starts, lengths) + 1
  flat = np.repeat(where, lengths) - back
  return click_log.RaggedColumn(item[by_user][flat], lengths)


def read_movielens(data_dir: str, max_history: int = 50) -> click_log.ClickLog:
  """Reads u.data, u.item and u.user into a time-ordered ClickLog.

  Args:
    data_dir: The unzipped `ml-100k` folder.
    max_history: At most this many earlier movies in `user_hist`.

  Returns:
    A ClickLog with the `MOVIELENS_SLOTS` slots, one example per rating,
    sorted by timestamp (file order among equal timestamps).

  Raises:
    MovieLensError: a file is missing, not latin-1 text, or malformed; the
      message names the file and the line.
  """
  items = _read_items(data_dir)
  users = _read_users(data_dir)
  ratings = _read_ratings(data_dir, users, items)
  ratings = ratings[np.argsort(ratings[:, 3], kind="stable")]
  user, item, rating, timestamp = ratings.T
  n = len(ratings)
  slot = {name: spec.number for name, spec in MOVIELENS_SLOTS.items()}

  item_ids = np.array(sorted(items), dtype=np.int64)
  genres = click_log.RaggedColumn(
      np.concatenate([items[i] for i in item_ids] + [[]]).astype(np.int64),
      [len(items[i]) for i in item_ids])
  genre_values, genre_lengths = genres.take(np.searchsorted(item_ids, item))

  user_ids = np.array(sorted(users), dtype=np.int64)
  attributes = {
      "user_age": [
          int(np.searchsorted(_AGE_BOUNDS, users[u][0], side="right"))
          for u in user_ids
      ],
      "user_gender": [_string_id(users[u][1]) for u in user_ids],
      "user_occupation": [_string_id(users[u][2].lower()) for u in user_ids],
      "user_zip": [_string_id(users[u][3][:3].upper()) for u in user_ids],
  }
  user_rows = np.searchsorted(user_ids, user)
  ones = np.ones(n, dtype=np.int64)
  hist = _history(user, item, max_history)

  def column(name, raw, lengths=ones):
    return click_log.RaggedColumn(click_log.fids(slot[name], raw), lengths)

  slots = collections.OrderedDict([
      ("user_id", column("user_id", user)),
      ("item_id", column("item_id", item)),
      ("item_genres", column("item_genres", genre_values, genre_lengths)),
      ("user_hist", column("user_hist", hist.values, hist.row_lengths)),
  ])
  for name, per_user in attributes.items():
    slots[name] = column(name, np.asarray(per_user, np.int64)[user_rows])
  labels = (rating >= _CLICK_RATING).astype(np.float32)
  return click_log.ClickLog(slots, labels, timestamp)


def item_rate_baseline(train: click_log.ClickLog,
                       heldout: click_log.ClickLog) -> np.ndarray:
  """Scores held-out examples with their item's click rate in `train`.

  A simple reference for the held-out AUC: the smoothed share of clicks of
  the item among its training examples (the overall rate for unseen items).

  Args:
    train: The training part.
    heldout: The held-out part.

  Returns:
    float64 `[len(heldout)]` scores.
  """
  train_items = train.slots["item_id"].values
  overall = float(train.labels.mean())
  keys, index = np.unique(train_items, return_inverse=True)
  clicks = np.bincount(index, weights=train.labels, minlength=len(keys))
  counts = np.bincount(index, minlength=len(keys))
  rate = (clicks + 5 * overall) / (counts + 5)  # 5 pseudo-examples.
  heldout_items = heldout.slots["item_id"].values
  pos = np.clip(np.searchsorted(keys, heldout_items), 0, len(keys) - 1)
  seen = keys[pos] == heldout_items
  return np.where(seen, rate[pos], overall)
