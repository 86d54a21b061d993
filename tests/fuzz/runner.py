"""Run one fuzz target under atheris: ``python -m tests.fuzz.runner TARGET [libFuzzer args]``.

kidecar, its plugins (whose configs the config parser reads) and PyYAML are
instrumented for coverage as they are imported here.
libFuzzer's own arguments follow the target's name, e.g. ``-max_total_time=25
-artifact_prefix=DIR/ NEW_CORPUS_DIR tests/fuzz/corpus/TARGET``: new inputs go
to the first corpus directory, the kept corpus in the repository is only read.
An uncaught exception ends the run with the input saved under ``artifact_prefix``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["kidecar_supervisor", "workers", "yaml"]):
    from tests.fuzz.targets import TARGETS


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: {argv[0]} TARGET [libFuzzer args]; targets: {', '.join(TARGETS)}")
    target = TARGETS[argv[1]]
    atheris.Setup([argv[0], *argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
