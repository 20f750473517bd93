"""The resource-export service (queue ``davit.export``): lists the resources in a backup's scope, page
by page, in parallel across resource types, and writes them to the location.

One task plans (discovery, the list targets) and lists and writes every target's first page itself,
several at once; every following page is a task of its own, handed to the queue by the page before it
before that one is written, so a large namespace keeps every export worker busy. The last
page to finish adds the cluster-scoped objects the namespaced ones need, and the last of all moves the
backup on to PostExecRule."""
