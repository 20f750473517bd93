"""The ``davit`` command line (SPEC §7): ``main`` holds the click group, one module per noun, ``output``
the rendering (tables, describe, JSON/YAML). What the commands share, by what it is about: ``context``
(the global options and the connection; Davit's objects through ``davit.kube.operations.Operations``),
``options`` (shared flags and flag parsing), ``objects`` (creating and printing objects), ``waiting``
(``--wait``), ``logs`` (an operation's log), ``runtime`` (opening a location's repository), ``commands``
(the commands backups, restores and clones share) and ``errors`` (one-line failures)."""
