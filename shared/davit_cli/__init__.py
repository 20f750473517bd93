"""The ``davit`` command line (SPEC §7): ``main`` holds the click group, one module per noun, ``output``
the rendering (tables, describe, JSON/YAML), ``common`` what the commands share."""
