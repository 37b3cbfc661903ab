"""Prints the N-th fenced bash command of the README's "Quick start" section.

CI runs exactly what the README tells a new user to run, so the two can't
drift apart. Usage: python3 .ci/readme_commands.py README.md N (N = 1 or 2).
"""

import re
import sys


def quick_start_commands(readme_text):
  """Returns the bash code blocks under the '## Quick start' heading."""
  match = re.search(r"^## Quick start\n(.*?)(?=^## )", readme_text,
                    re.MULTILINE | re.DOTALL)
  if not match:
    raise SystemExit("README has no '## Quick start' section")
  blocks = re.findall(r"^```bash\n(.*?)^```", match.group(1),
                      re.MULTILINE | re.DOTALL)
  if len(blocks) != 2:
    raise SystemExit(
        f"Quick start must have exactly 2 bash blocks, found {len(blocks)}")
  return [block.strip() for block in blocks]


def main(argv):
  if len(argv) != 3 or argv[2] not in ("1", "2"):
    raise SystemExit(__doc__)
  with open(argv[1], encoding="utf-8") as f:
    print(quick_start_commands(f.read())[int(argv[2]) - 1])


if __name__ == "__main__":
  main(sys.argv)
