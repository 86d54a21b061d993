"""The hot_update plugin: pull a file on request, put it in place atomically, reload the game."""
