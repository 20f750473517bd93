"""The backup location format (docs/format.md): where things live, how every object is sealed
(compressed, checksummed, optionally encrypted), and the per-backup manifest."""

#: Version of the layout and object encoding, written into every manifest and the location record.
#: 2: the location record names its key derivation, says whether the location is encrypted, and is
#: authenticated with a key derived from the encryptionKey (docs/format.md); version 1 locations still open.
FORMAT_VERSION = 2
