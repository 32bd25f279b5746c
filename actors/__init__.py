"""The actor system (installed as overseer.actors)."""
