"""http_probe: probe the game's own HTTP endpoint, map its state onto markers.

See ``plugin.py`` for the threads and the write-on-change rule, ``markers.py``
for how states become labels/annotations/opsState across endpoints.
"""
