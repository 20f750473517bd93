"""The node agent (uploader; a DaemonSet, queue ``davit.node.<nodeName>``): reads the volumes mounted on
its node and stores them in the location's deduplicating repository (davit.repo)."""
