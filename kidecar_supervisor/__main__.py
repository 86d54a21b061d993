"""``python -m kidecar_supervisor``: the same commands as the ``kidecar`` script.

The image starts the sidecar this way, ``python -OO -m kidecar_supervisor run``:
a console script cannot pass interpreter flags, and ``-OO`` (no docstrings, no
asserts) makes every process of the tree smaller (issue 16, docs/footprint.md).
"""

from kidecar_supervisor.cli import main

raise SystemExit(main())
