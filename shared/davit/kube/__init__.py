"""The Kubernetes access layer: the only package that imports the Kubernetes client library (an import
contract in ``.importlinter`` holds everything else to it). ``client`` re-exports what other code needs of
the library (the API client type, ``ApiException``/``KubeApiError``); ``operations.Operations`` reads and
writes every Davit object; ``core`` reads claims, volumes, pods and namespaces; ``csi`` drives
VolumeSnapshots; ``clients`` builds API clients, ``watching`` lists and watches, ``events`` records Events,
``discovery`` lists any resource raw, ``execution`` runs commands in pods."""
