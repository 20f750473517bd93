"""Davit's services, one package each: each runs as its own process and consumes its own queue(s)."""
