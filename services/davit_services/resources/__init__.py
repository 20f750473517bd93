"""The resource-export service (queue ``davit.export``): lists the resources in a backup's scope, page
by page, in parallel across resource types, and writes them to the location.

One task plans (discovery, the list targets); every page is a task of its own that hands the next page
to the queue before it writes its own, so a large namespace keeps every export worker busy. The last
page to finish adds the cluster-scoped objects the namespaced ones need, and the last of all moves the
backup on to PostExecRule."""
