"""Object stores behind one interface: S3 (and S3-compatible), Azure Blob, Google Cloud Storage (through
its S3-compatible XML API with HMAC keys) and a local directory."""
