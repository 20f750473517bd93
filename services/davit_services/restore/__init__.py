"""The restore service (queue ``davit.restore``): restores an ApplicationRestore's backup (and carries
out clones' restore half) into the cluster, in dependency tiers, with transformations, and drives the
node agents that write the volume data back."""
