"""The reliability suite: worker and server kills, fault injection, load (docs/RELIABILITY.md)."""
