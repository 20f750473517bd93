"""The backup location format (docs/format.md): where things live, how every object is sealed
(compressed, checksummed, optionally encrypted), and the per-backup manifest."""

#: Version of the layout and object encoding, written into every manifest and the location record.
FORMAT_VERSION = 1
