"""Result stores: where plugins record what they did (Local SQLite, InKube)."""
