"""file_sync: copy files baked into the sidecar image into the shared directory, then reload the game.

The OKG hot-update guide ships game scripts/resources as a sidecar *image*: a
new image version restarts only the sidecar container, which copies its files
into the emptyDir the game reads and pokes the game to reload. This plugin is
that flow (plus an optional watch mode so the game image needs no inotifywait).
"""
