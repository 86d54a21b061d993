"""Helpers that several plugins share, part of the plugin API surface.

Plugins import only ``kidecar_supervisor.plugin_api`` and this package (plus
the standard library and their own dependencies). What two plugins need alike
lives here once instead of one plugin reaching into another's modules:

* ``durable_files``: crash-safe file writes (temp file, fsync, rename, fsync
  of the directory) and quiet removal; the result stores use it too.
* ``reload``: making the game load new files, by a signal to its processes or
  by an HTTP request, with the config types that describe how.
* ``jsonpath``: the small JSONPath subset that picks one value out of a game's
  JSON answer (http_probe's state, hot_update's confirmed version).

Nothing here imports ``plugin_api`` or the storage layer, so core modules
may use these helpers without depending on the plugin interface.
"""
