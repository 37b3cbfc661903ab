"""Writes small synthetic files in the MovieLens 100K format for the tests.

The real ml-100k files are not shipped (GroupLens' licence, and no download
at test time); these have the same layout: `u.data` tab-separated
`user item rating timestamp`, `u.item` latin-1 `|`-separated with 19 genre
flags at the end, `u.user` `user|age|gender|occupation|zip`. Ratings follow
a hidden model (movie quality, users liking some genres) so that a model can
learn from them; users arrive over time and rate in bursts, as in the real
data.
"""

import os

import numpy as np

OCCUPATIONS = ("administrator", "artist", "educator", "engineer", "student",
               "programmer", "retired", "technician", "writer", "other")
GENRES = 19


def write_movielens_files(folder: str,
                          num_users: int = 40,
                          num_items: int = 60,
                          num_ratings: int = 2000,
                          seed: int = 0) -> str:
  """Writes u.data, u.item and u.user into `folder` (created if missing).

  Args:
    folder: Output folder.
    num_users: Users (ids 1..num_users).
    num_items: Movies (ids 1..num_items).
    num_ratings: Ratings (each user rates at least one movie).
    seed: Seed of the generator.

  Returns:
    `folder`.
  """
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  quality = rng.normal(0.0, 1.0, size=num_items + 1)
  item_genres = []
  with open(os.path.join(folder, "u.item"),
            "w",
            encoding="latin-1",
            newline="\n") as f:
    for item in range(1, num_items + 1):
      flags = np.zeros(GENRES, dtype=int)
      flags[rng.choice(GENRES, size=rng.integers(1, 4), replace=False)] = 1
      item_genres.append(flags)
      # A non-ASCII latin-1 title, as in the real file ("Café au lait").
      title = ("Caf\u00e9 {} (1995)" if item %
               7 == 0 else "Movie {} (1996)").format(item)
      f.write("{}|{}|01-Jan-1995||http://example.invalid/{}|{}\n".format(
          item, title, item, "|".join(str(v) for v in flags)))
  item_genres = np.array(item_genres)

  liked = rng.integers(GENRES, size=(num_users + 1, 2))
  with open(os.path.join(folder, "u.user"),
            "w",
            encoding="latin-1",
            newline="\n") as f:
    for user in range(1, num_users + 1):
      f.write("{}|{}|{}|{}|{:05d}\n".format(user, rng.integers(15, 70),
                                            "MF"[rng.integers(2)],
                                            OCCUPATIONS[rng.integers(10)],
                                            rng.integers(100000)))

  # Users arrive over 200 days and rate in bursts of a few days.
  start = 874724710
  arrival = np.sort(rng.integers(0, 200 * 86400, size=num_users + 1))
  user = np.concatenate([
      np.arange(1, num_users + 1),
      rng.integers(1, num_users + 1, size=num_ratings - num_users)
  ])
  item = rng.integers(1, num_items + 1, size=num_ratings)
  when = start + arrival[user] + rng.integers(0, 5 * 86400, size=num_ratings)
  likes = item_genres[item - 1][np.arange(num_ratings)[:, None],
                                liked[user]].any(axis=1)
  score = 3.0 + quality[item] + 1.5 * likes + rng.normal(0, 0.7, num_ratings)
  rating = np.clip(np.round(score), 1, 5).astype(int)
  order = rng.permutation(num_ratings)  # The real file is not time-sorted.
  with open(os.path.join(folder, "u.data"),
            "w",
            encoding="latin-1",
            newline="\n") as f:
    for k in order:
      f.write("{}\t{}\t{}\t{}\n".format(user[k], item[k], rating[k], when[k]))
  return folder
