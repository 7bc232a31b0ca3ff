"""Print the project's dependencies from pyproject.toml, one per line (used by the Dockerfile).

    python docker/requirements_from_pyproject.py [--only NAME | --exclude NAME] [PYPROJECT]

Lets the image install the dependency layer before the source is copied, from the same
version ranges as `pip install .`.
"""

import re
import sys

import tomllib


def main(argv: list[str]) -> int:
    only = exclude = None
    path = "pyproject.toml"
    it = iter(argv)
    for arg in it:
        if arg == "--only":
            only = next(it).lower()
        elif arg == "--exclude":
            exclude = next(it).lower()
        else:
            path = arg
    with open(path, "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    for dep in deps:
        name = re.match(r"[A-Za-z0-9._-]+", dep).group(0).lower()
        if (only and name != only) or (exclude and name == exclude):
            continue
        print(dep)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
