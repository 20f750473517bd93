"""Restoring resources (pure): the order objects are created in (``tiers``), what is changed or left out
on the way (``transform``, with the shared field edits in ``fields``), the whole plan of a restore
(``plan``) and the comparison of an original with its restored copy (``normalize``).

Nothing here talks to a cluster or a location; the restore service loads objects, calls these functions
and creates what they return. ``docs/architecture.md`` ("Restore: order and transformations") explains
every rule.
"""
