"""The snapshot service (queue ``davit.snapshot``): starts backups and clones (location check, pre-exec
rules, volumes) and ends them (post-exec rules, the manifest). Volume data and exec rules come next; the
stages are in place so that they slot in without reshaping the pipeline."""
